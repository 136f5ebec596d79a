"""Builders: pure functions from a ModelDeployment and a revision to the plain dicts of owned objects.

No clock, randomness or global configuration inside; everything they need is passed in, and names are
deterministic, so rendered children can be golden-tested and re-applied idempotently.
"""
