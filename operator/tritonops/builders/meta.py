"""Names, labels, owner references and the revision hash shared by all builders."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from tritonops.api import API_VERSION, KIND
from tritonops.diff import parse_quantity

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MD = "tritonops.io/modeldeployment"
LABEL_REVISION = "tritonops.io/revision"
MANAGED_BY = "tritonops"
ANNOTATION_SPEC_HASH = "tritonops.io/spec-hash"

# The parts of the spec that define what a pod serves: changing any of them makes a new revision.
# replicas, rollout, autoscaling, drift and retraining do not.
REVISION_FIELDS = ("model", "runtime", "resources", "nodeSelector", "tolerations", "affinity",
                   "priorityClassName", "serviceAccountName")


@dataclass(frozen=True)
class Owner:
    """The ModelDeployment that owns a child."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        """An ownerReference that makes deletion cascade and marks us as the controller."""
        return {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


def canonical_hash(value: Any, length: int = 10) -> str:
    """A short, stable hash of a JSON-like value (key order does not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _canonical_quantities(resources: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part, values in resources.items():
        if isinstance(values, dict):
            out[part] = {}
            for key, value in values.items():
                number = parse_quantity(value)
                out[part][key] = format(number.normalize(), "f") if number is not None else value
        else:
            out[part] = values
    return out


def revision_of(name: str, spec: dict[str, Any], runtime_image: str) -> str:
    """Revision name ``<md>-<hash>``, hashed from the serving-relevant spec (quantities canonical: ``1``,
    ``"1"`` and ``"1000m"`` hash alike) and the fetcher image.

    >>> revision_of("clf", {"model": {"name": "clf"}}, "img")  # doctest: +SKIP
    'clf-3f1c0a9b2e'
    """
    basis = {k: spec[k] for k in REVISION_FIELDS if k in spec}
    if "resources" in basis:
        basis["resources"] = _canonical_quantities(basis["resources"])
    if (spec.get("drift") or {}).get("enabled"):  # the sidecar is part of the pod; disabled hashes as before
        basis["drift"] = spec["drift"]
    basis["fetcherImage"] = runtime_image
    return f"{name}-{canonical_hash(basis)}"


def legacy_revision_of(name: str, spec: dict[str, Any], runtime_image: str) -> str:
    """The revision name operator versions before 0.2 gave ``spec`` (quantities hashed as written)."""
    basis = {k: spec[k] for k in REVISION_FIELDS if k in spec}
    basis["fetcherImage"] = runtime_image
    return f"{name}-{canonical_hash(basis)}"


def config_map_name(revision: str) -> str:
    """The ConfigMap holding a revision's config.pbtxt."""
    return f"{revision}-config"


def selector_labels(md_name: str) -> dict[str, str]:
    """Labels that select every serving pod of a ModelDeployment, across revisions."""
    return {LABEL_NAME: "triton", LABEL_INSTANCE: md_name, LABEL_MD: md_name}


def selector_string(md_name: str) -> str:
    """``selector_labels`` as a label-selector string (status.selector for the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(md_name).items()))


def common_labels(md_name: str, component: str, revision: str = "") -> dict[str, str]:
    """``app.kubernetes.io/*`` labels plus ours; the revision label only on per-revision objects."""
    labels = {**selector_labels(md_name), LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGED_BY,
              LABEL_PART_OF: "tritonops"}
    if revision:
        labels[LABEL_REVISION] = revision
    return labels


def metadata(name: str, owner: Owner, labels: dict[str, str],
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """ObjectMeta for a child in the owner's namespace."""
    meta: dict[str, Any] = {"name": name, "namespace": owner.namespace, "labels": labels,
                            "ownerReferences": [owner.reference()]}
    if annotations:
        meta["annotations"] = annotations
    return meta


def stamp_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Record a hash of the desired object on it, so a later plan sees removed fields as a change."""
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations.pop(ANNOTATION_SPEC_HASH, None)
    annotations[ANNOTATION_SPEC_HASH] = canonical_hash(obj, 16)
    return obj
