"""Rolling updates between two revisions with ``maxSurge`` / ``maxUnavailable`` (pure; issue 9, item 6).

A Rolling rollout replaces the stable revision's Deployment with the target's. Without
``spec.rollout.rolling`` the target gets every replica at once and the stable revision keeps all of its
until the target is fully available (a 100 % surge: the fastest, and twice the GPUs for a while). With it,
the two Deployments are sized each cycle the way a Deployment sizes its ReplicaSets:

- the target grows while the total stays within ``replicas + maxSurge``;
- the stable revision shrinks while the available pods of both stay at least ``replicas - maxUnavailable``.

"Available" is Kubernetes' availability of Triton pods, whose readiness is Triton's own
``/v2/health/ready`` with ``--strict-readiness``, so a replica counts only once its model is loaded.
``maxSurge: 0`` with ``maxUnavailable: 1`` keeps the GPU count constant (the capacity rule of canaries'
NoSurge). Values are counts or percentages of ``replicas`` (surge rounds up, unavailability down, as in
Kubernetes); the schema refuses both zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Side:
    """One revision's Deployment as observed: replicas asked for, and available."""

    replicas: int
    available: int


def resolve(value: int | str, total: int, round_up: bool) -> int:
    """A count or a percentage of ``total`` as a count."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if not text.endswith("%"):
        return int(text)
    exact = total * int(text[:-1]) / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def bounds(spec: dict[str, Any], total: int) -> tuple[int, int] | None:
    """(maxSurge, maxUnavailable) as counts, or None when ``spec.rollout.rolling`` is not set."""
    rolling = spec.get("rollout", {}).get("rolling")
    if not rolling:
        return None
    surge = resolve(rolling.get("maxSurge", "25%"), total, round_up=True)
    unavailable = resolve(rolling.get("maxUnavailable", 0), total, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the schema refuses it; a percentage can still round to 0 on small totals
    return surge, unavailable


def split(total: int, surge: int, unavailable: int, old: Side, new: Side) -> tuple[int, int]:
    """(stable replicas, target replicas) for this cycle."""
    grown = min(total, max(new.replicas, total + surge - old.replicas))
    min_available = max(0, total - unavailable)
    removable = max(0, old.available + new.available - min_available) + (old.replicas - old.available)
    return max(0, old.replicas - removable), grown
