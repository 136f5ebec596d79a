"""In-sync detection over server-defaulted objects, and reading pod failures."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tritonops.diagnose import diagnose
from tritonops.diff import contains, parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("1", Decimal(1)), (1, Decimal(1)), ("500m", Decimal("0.5")), ("1Gi", Decimal(2**30)),
    ("1.5k", Decimal(1500)), ("abc", None), ("1Xi", None),
])
def test_parse_quantity(text: Any, value: Decimal | None) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize(("have", "want", "same"), [
    ({"a": 1, "b": 2}, {"a": 1}, True),
    ({"a": 1}, {"a": 1, "b": 2}, False),
    ({"l": [{"x": 1, "y": 2}]}, {"l": [{"x": 1}]}, True),
    ({"l": [{"x": 1}, {"x": 2}]}, {"l": [{"x": 1}]}, False),
    ({"cpu": "1"}, {"cpu": "1000m"}, True),
    ({"gpu": "1"}, {"gpu": 1}, True),
    ({"flag": True}, {"flag": 1}, False),
    (None, {"a": 1}, False),
])
def test_contains(have: Any, want: Any, same: bool) -> None:
    assert contains(have, want) is same


def _pod(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def test_diagnose_prefers_scheduling_then_fetch_then_server() -> None:
    unsched = _pod("a", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 node(s) had untolerated taint"}])
    fetch = _pod("b", initContainerStatuses=[{"state": {"terminated": {"exitCode": 2, "message": "no such key"}}}])
    crash = _pod("c", containerStatuses=[{"restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                          "lastState": {"terminated": {"exitCode": 1, "message": "load failed"}}}])
    d = diagnose([crash, fetch, unsched])
    assert d is not None and d.reason == "UntoleratedTaint" and "untolerated taint" in d.message
    d = diagnose([crash, fetch])
    assert d is not None and (d.reason, d.message) == ("ModelFetchFailed", "pod b: no such key")
    d = diagnose([crash])
    assert d is not None and d.reason == "ModelLoadFailed" and "load failed" in d.message
    assert diagnose([_pod("ok", phase="Running")]) is None
    terminating = dict(unsched, metadata={"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"})
    assert diagnose([terminating]) is None
