"""``kubectl tritonops``: the patches it sends and the status it prints (pure parts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tritonops import plugin

MD: dict[str, Any] = {
    "metadata": {"name": "clf"},
    "spec": {"rollout": {"strategy": "Canary", "canary": {"steps": [
        {"setWeight": 25}, {"pause": {}}, {"setWeight": 50}, {"pause": {"durationSeconds": 60}}]}}},
    "status": {"phase": "Progressing", "stableRevision": "clf-aaaaaaaaaa", "canaryRevision": "clf-bbbbbbbbbb",
               "canaryWeight": 25,
               "rollout": {"currentStepIndex": 1, "decision": "Paused", "message": "step 1: paused until promoted"},
               "conditions": [{"type": "Progressing", "status": "True", "reason": "CanaryPaused", "message": "m"}],
               "history": [{"revision": "clf-aaaaaaaaaa", "outcome": "Promoted", "modelVersion": 1,
                            "promotedAt": "2026-11-30T12:00:00Z"}]},
}


def test_status_is_a_timeline_of_the_steps() -> None:
    text = plugin.render_status(MD)
    assert "weight:  25%   decision: Paused (step 1: paused until promoted)" in text
    assert "  ok 1. setWeight 25\n  -> 2. pause until promoted\n     3. setWeight 50\n     4. pause 60s" in text
    assert "Progressing  True   CanaryPaused: m" in text
    assert "clf-aaaaaaaaaa      Promoted             1" in plugin.render_history(MD)


@pytest.mark.parametrize(("action", "full", "patch"), [
    ("promote", False, {"metadata": {"annotations": {"tritonops.io/promote-step": "clf-bbbbbbbbbb/1"}}}),
    ("promote", True, {"metadata": {"annotations": {"tritonops.io/promote": "clf-bbbbbbbbbb"}}}),
    ("abort", False, {"metadata": {"annotations": {"tritonops.io/abort": "clf-bbbbbbbbbb"}}}),
    ("pause", False, {"metadata": {"annotations": {"tritonops.io/pause": "clf-bbbbbbbbbb"}}}),
    ("resume", False, {"metadata": {"annotations": {"tritonops.io/pause": None}}}),
])
def test_requests_name_the_canary_and_the_step(action: str, full: bool, patch: dict[str, Any]) -> None:
    assert plugin.request(MD, action, full) == patch


def test_promote_without_a_canary_says_so() -> None:
    with pytest.raises(SystemExit, match="no canary revision in flight"):
        plugin.request({"metadata": {"name": "clf"}, "spec": {}, "status": {}}, "promote")


def test_retrain_and_approve_are_annotations_and_status_shows_the_loop() -> None:
    md = {"metadata": {"name": "clf"}, "spec": {"retraining": {"enabled": True}}, "status": {
        "drift": {"method": "psi", "threshold": 0.2, "detected": True, "score": 0.41, "windows": 3,
                  "quality": {"metric": "accuracy", "value": 0.62, "minimum": 0.8, "pairs": 500,
                              "belowMinimum": True}},
        "retraining": {"phase": "Succeeded", "jobs": 1, "candidate": {
            "job": "clf-retrain-1", "storageUri": "s3://m/clf/2/model.pt", "version": 2, "promotion": "Pending"}}}}
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert plugin.request(md, "retrain", now=now) == {"metadata": {"annotations": {
        "tritonops.io/retrain": "2026-11-30T12:00:00Z"}}}
    assert plugin.request(md, "approve") == {"metadata": {"annotations": {"tritonops.io/approve": "clf-retrain-1"}}}
    text = plugin.render_status(md)
    assert "drift:   DETECTED (psi score 0.41" in text and "accuracy 0.62 (minimum 0.8, 500 labels) BELOW" in text
    assert "candidate: s3://m/clf/2/model.pt version 2 digest -: Pending" in text
    md["status"]["retraining"]["candidate"]["promotion"] = "Promoted"
    with pytest.raises(SystemExit, match="no retrained candidate waits"):
        plugin.request(md, "approve")
    with pytest.raises(SystemExit, match="retraining is not enabled"):
        plugin.request({"metadata": {"name": "x"}, "spec": {}}, "retrain")
