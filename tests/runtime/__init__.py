"""Tests of the runtime data plane (tritonops_runtime): config rendering, fetcher, wrapper, real Triton."""
