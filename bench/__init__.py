"""Benchmarks (``bash hack/bench.sh [--smoke] [NAME...]``); each module is one bench, run with ``python -m``."""
