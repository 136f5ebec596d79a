"""``kubectl tritonops``: read and steer a ModelDeployment's rollout (a kubectl plugin, ``kubectl-tritonops``).

    kubectl tritonops status NAME       the rollout as a timeline: steps, weight, decision, conditions, history
    kubectl tritonops promote NAME      end the current pause and go on with the next step
    kubectl tritonops promote NAME --full   skip every remaining step
    kubectl tritonops abort NAME        all traffic back to stable, the canary scaled to zero
    kubectl tritonops pause|resume NAME hold the canary where it is / let it go on
    kubectl tritonops history NAME      promoted and aborted revisions, drift and retraining events
    kubectl tritonops retrain NAME      start a retraining Job now (spec.retraining; the cooldown does not apply)
    kubectl tritonops approve NAME      roll the accepted retrained candidate out (promotion.mode Manual)

Every request is an annotation that names the canary revision (``tritonops.io/promote``,
``tritonops.io/promote-step: <revision>/<step>``, ``tritonops.io/abort``, ``tritonops.io/pause``; resume
removes the pause), the same ones the Argo CD actions write: a request acts on that canary (and that step)
only, and an annotation nobody declared in Git is no GitOps drift. ``spec.rollout.paused`` is the
declarative pause: set it in Git. ``retrain`` sets ``tritonops.io/retrain`` to the request time (each value is
one request) and ``approve`` sets ``tritonops.io/approve`` to the candidate's Job.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

import kubernetes

from tritonops.api import GROUP, PLURAL, VERSION
from tritonops.canary import stamp
from tritonops.retrain_plan import APPROVE_ANNOTATION, RETRAIN_ANNOTATION
from tritonops.rollout_plan import ABORT_ANNOTATION, PAUSE_ANNOTATION, PROMOTE_ANNOTATION, PROMOTE_STEP_ANNOTATION


def _step_text(step: dict[str, Any]) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    kind = "pause" if "pause" in step else "analysis"
    seconds = (step.get(kind) or {}).get("durationSeconds")
    return f"{kind} {seconds}s" if seconds is not None else f"{kind} until promoted"


def _steps(md: dict[str, Any]) -> list[str]:
    steps = md["spec"].get("rollout", {}).get("canary", {}).get("steps", [])
    rollout = md.get("status", {}).get("rollout", {})
    current = rollout.get("currentStepIndex")
    lines = []
    for i, step in enumerate(steps):
        mark = "   " if current is None or i > current else ("-> " if i == current else "ok ")
        lines.append(f"  {mark}{i + 1}. {_step_text(step)}")
    return lines


def render_status(md: dict[str, Any]) -> str:
    """A readable account of ``md``'s rollout (pure: the object in, text out)."""
    status, spec = md.get("status") or {}, md["spec"]
    rollout = status.get("rollout", {})
    lines = [f"{md['metadata']['name']}: {status.get('phase', 'Pending')} "
             f"(strategy {spec.get('rollout', {}).get('strategy', 'Rolling')})",
             f"  stable:  {status.get('stableRevision', '-')}",
             f"  canary:  {status.get('canaryRevision', '-')}"]
    if "decision" in rollout:
        lines.append(f"  weight:  {status.get('canaryWeight', 0)}%   decision: {rollout['decision']}"
                     + (f" ({rollout['message']})" if rollout.get("message") else ""))
        lines += ["steps:", *_steps(md)]
    lines += _drift_lines(status)
    lines.append("conditions:")
    for c in status.get("conditions", []):
        detail = f": {c['message']}" if c["message"] else ""
        lines.append(f"  {c['type']:<12} {c['status']:<6} {c['reason']}{detail}")
    return "\n".join(lines)


def _drift_lines(status: dict[str, Any]) -> list[str]:
    lines = []
    drift, retraining = status.get("drift") or {}, status.get("retraining") or {}
    if drift:
        quality = drift.get("quality") or {}
        lines.append(f"  drift:   {'DETECTED' if drift.get('detected') else 'none'} ({drift.get('method')} score "
                     f"{drift.get('score', '-')}, threshold {drift.get('threshold')}, predictions PSI "
                     f"{drift.get('predictionPSI', '-')}, {drift.get('windows', 0)} windows, checked "
                     f"{drift.get('lastCheckTime', '-')})" + (f" {drift['message']}" if drift.get("message") else ""))
        if quality:
            lines.append(f"  quality: {quality['metric']} {quality['value']} (minimum {quality['minimum']}, "
                         f"{quality['pairs']} labels){' BELOW MINIMUM' if quality.get('belowMinimum') else ''}")
    if retraining:
        lines.append(f"  retrain: {retraining.get('phase')} ({retraining.get('jobs', 0)} jobs)"
                     + (f": {retraining['message']}" if retraining.get("message") else ""))
        candidate = retraining.get("candidate")
        if candidate:
            lines.append(f"  candidate: {candidate['storageUri']} version {candidate['version']} digest "
                         f"{candidate.get('digest', '-')}: {candidate.get('promotion')}")
    return lines


def render_history(md: dict[str, Any]) -> str:
    rows = ["REVISION / JOB      OUTCOME              MODEL VERSION  WHEN"]
    for h in (md.get("status") or {}).get("history", []):
        when = h.get("retiredAt") or h.get("promotedAt") or h.get("at", "")
        what = h.get("revision") or h.get("job", "")
        rows.append(f"{what:<19} {h.get('outcome', ''):<20} {h.get('modelVersion', ''):<14} {when}")
    return "\n".join(rows)


def _canary(md: dict[str, Any]) -> str:
    canary = (md.get("status") or {}).get("canaryRevision")
    if not canary:
        raise SystemExit(f"{md['metadata']['name']}: no canary revision in flight")
    return str(canary)


def request(md: dict[str, Any], action: str, full: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """The merge patch that asks the operator for ``action`` on ``md``'s current canary."""
    if action == "resume":
        return {"metadata": {"annotations": {PAUSE_ANNOTATION: None}}}
    if action == "retrain":
        if not (md["spec"].get("retraining") or {}).get("enabled"):
            raise SystemExit(f"{md['metadata']['name']}: retraining is not enabled (spec.retraining.enabled)")
        return {"metadata": {"annotations": {RETRAIN_ANNOTATION: stamp(now or datetime.now(UTC))}}}
    if action == "approve":
        candidate = ((md.get("status") or {}).get("retraining") or {}).get("candidate") or {}
        if candidate.get("promotion") != "Pending":
            raise SystemExit(f"{md['metadata']['name']}: no retrained candidate waits for approval")
        return {"metadata": {"annotations": {APPROVE_ANNOTATION: candidate["job"]}}}
    canary = _canary(md)
    if action == "pause":
        return {"metadata": {"annotations": {PAUSE_ANNOTATION: canary}}}
    if action == "abort":
        return {"metadata": {"annotations": {ABORT_ANNOTATION: canary}}}
    if full:
        return {"metadata": {"annotations": {PROMOTE_ANNOTATION: canary}}}
    step = (md.get("status") or {}).get("rollout", {}).get("currentStepIndex", 0)
    return {"metadata": {"annotations": {PROMOTE_STEP_ANNOTATION: f"{canary}/{step}"}}}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kubectl tritonops", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("status", "promote", "abort", "pause", "resume", "history", "retrain",
                                       "approve"))
    p.add_argument("name", help="the ModelDeployment")
    p.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    p.add_argument("--kubeconfig", help="default: $KUBECONFIG or ~/.kube/config")
    p.add_argument("--full", action="store_true", help="promote: skip every remaining step")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    kubernetes.config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    namespace = args.namespace or kubernetes.config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
        config_file=args.kubeconfig)[1]["context"].get("namespace", "default")
    api = kubernetes.client.CustomObjectsApi()
    try:
        md: dict[str, Any] = dict(api.get_namespaced_custom_object(  # type: ignore[call-overload]
            GROUP, VERSION, namespace, PLURAL, args.name))
        if args.action in ("status", "history"):
            print(render_status(md) if args.action == "status" else render_history(md))
            return 0
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, args.name,
                                           request(md, args.action, args.full))
    except kubernetes.client.ApiException as err:
        print(f"kubectl tritonops {args.action} {args.name}: {err.status} {err.reason}", file=sys.stderr)
        return 1
    print(f"modeldeployment/{args.name}: {args.action}{' --full' if args.full else ''} requested")
    return 0


if __name__ == "__main__":
    sys.exit(main())
