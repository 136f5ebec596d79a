"""Why pods cannot be placed, from the real scheduler's messages (KWOK GPU nodes are tainted nvidia.com/gpu).

Each ModelDeployment below can never be scheduled for one reason; the Degraded condition must name that
reason, not a neighbouring one (an untolerated GPU taint used to read as InsufficientGPU).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.support import Api, OperatorProcess, md_body, wait_until

pytestmark = pytest.mark.cluster
CPU = {"runtime": {"triton": {"maxBatchSize": 8, "instanceGroups": [{"kind": "KIND_CPU", "count": 1}]}},
       "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}}}
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    # a CPU pod sent to the GPU nodes without the GPU toleration the operator adds only to GPU pods
    "taint": ({**CPU, "nodeSelector": {"nvidia.com/gpu.present": "true"}}, "UntoleratedTaint", "untolerated taint"),
    "selector": ({**CPU, "nodeSelector": {"tritonops.io/no-such-pool": "x"}}, "NodeSelectorMismatch",
                 "didn't match Pod's node affinity/selector"),
    "gpus": ({"resources": {"limits": {"nvidia.com/gpu": 64, "memory": "4Gi"}}}, "InsufficientGPU",
             "Insufficient nvidia.com/gpu"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_degraded_reason_follows_the_schedulers_message(api: Api, operator: OperatorProcess, namespace: str,
                                                            case: str) -> None:
    overrides, reason, words = CASES[case]
    api.create_md(namespace, md_body(case, **overrides))

    def degraded() -> dict[str, Any] | None:
        cond = api.condition(namespace, case, "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_until(f"{case}: Degraded", degraded, timeout=60)
    assert cond["reason"] == reason and words in cond["message"], cond
