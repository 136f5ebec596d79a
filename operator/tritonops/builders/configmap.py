"""The per-revision ConfigMap that carries the rendered Triton ``config.pbtxt``."""

from __future__ import annotations

from typing import Any

from tritonops.builders.meta import Owner, common_labels, config_map_name, metadata, stamp_hash
from tritonops_runtime.contract import CONFIG_FILE


def build_config_map(owner: Owner, revision: str, config_pbtxt: str) -> dict[str, Any]:
    """An immutable ConfigMap: its content is fixed by the revision hash, so it never changes."""
    return stamp_hash({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(config_map_name(revision), owner,
                             common_labels(owner.name, "model-config", revision)),
        "immutable": True,
        "data": {CONFIG_FILE: config_pbtxt},
    })
