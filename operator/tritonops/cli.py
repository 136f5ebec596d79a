"""The ``tritonops`` command: ``run`` (the operator), ``crd`` (print/write/check the CRD), ``dev``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tritonops.api import crd


def _crd(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else crd.default_path()
    if args.check:
        problem = crd.check(path)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    if args.write:
        for target, text in crd.generated_files(path).items():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"wrote {target}")
        return 0
    sys.stdout.write(crd.render())
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf  # heavy; only the run command needs it

    from tritonops import handlers
    from tritonops.builders.deployment import BuildOptions
    from tritonops.controller import ControllerConfig

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from tritonops.prom import Endpoint

    prometheus = Endpoint(args.prometheus_url, token_file=args.prometheus_token_file, ca_file=args.prometheus_ca_file,
                          insecure_skip_verify=args.prometheus_insecure_skip_verify) if args.prometheus_url else None
    build = BuildOptions(runtime_image=args.runtime_image, prometheus_url=args.prometheus_url)
    namespaces = [n for n in args.namespace or os.environ.get("WATCH_NAMESPACES", "").split(",") if n]
    handlers.RUNTIME.config = ControllerConfig(build=build, resync_seconds=args.resync_seconds, workers=args.workers,
                                               prometheus=prometheus, listed=frozenset(namespaces))
    handlers.RUNTIME.qps, handlers.RUNTIME.burst = args.qps, args.burst
    handlers.RUNTIME.metrics_port = args.metrics_port
    handlers.RUNTIME.listen_address = args.listen_address
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces,
             liveness_endpoint=f"http://{args.listen_address}:{args.health_port}/healthz")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tritonops", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--namespace", action="append", help="watch only this namespace (repeatable; "
                     "default: $WATCH_NAMESPACES, comma-separated, else the whole cluster)")
    run.add_argument("--runtime-image", default=os.environ.get(
        "TRITONOPS_RUNTIME_IMAGE", "ghcr.io/tritonops/tritonops-runtime:0.1.0"))
    run.add_argument("--qps", type=float, default=50.0,
                     help="client-side API rate limit (cycles read from the watch cache: this meters writes)")
    run.add_argument("--burst", type=int, default=100)
    run.add_argument("--workers", type=int, default=4)
    run.add_argument("--resync-seconds", type=float, default=300.0)
    run.add_argument("--metrics-port", type=int, default=8080)
    run.add_argument("--health-port", type=int, default=8081)
    run.add_argument("--listen-address", default="0.0.0.0",
                     help="address of the metrics and health endpoints (127.0.0.1 when run on a workstation)")
    run.add_argument("--log-level", default="info")
    run.add_argument("--prometheus-url", default=os.environ.get("TRITONOPS_PROMETHEUS_URL", ""),
                     help="Prometheus for canary analysis (without it, specs with analysis are refused unless "
                     "they name their own)")
    run.add_argument("--prometheus-token-file", default="", help="bearer token for --prometheus-url")
    run.add_argument("--prometheus-ca-file", default="", help="CA bundle for an https --prometheus-url")
    run.add_argument("--prometheus-insecure-skip-verify", action="store_true")
    c = sub.add_parser("crd", help="print the CRD, --write it to crds/, or --check it is current")
    c.add_argument("--write", action="store_true")
    c.add_argument("--check", action="store_true")
    c.add_argument("--path", default="")
    sub.add_parser("dev", help="local control plane: dev up|down|kubeconfig|status", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tritonops`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "dev":
        from tritonops.devcluster.cli import run as dev_run

        code: int = dev_run(argv[1:])
        return code
    args = _parser().parse_args(argv)
    return _crd(args) if args.command == "crd" else _run(args)


if __name__ == "__main__":
    sys.exit(main())
