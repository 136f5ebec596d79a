"""Decide whether an owned object already holds what we would apply (so that no write is needed).

The API server adds defaults and other managers' fields, so the observed object is a superset of what we
apply. An object is in sync when every field we set has the same value there. Removed fields are caught
by the spec-hash annotation each builder stamps on its output.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]*)$")


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity as a number (``"1Gi"`` → 1073741824, ``"500m"`` → 0.5), else None."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        return None
    try:
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def _scalar_equal(want: Any, have: Any) -> bool:
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have  # True == 1 in Python, not in Kubernetes
    if want == have:
        return True
    # The server canonicalises quantities ("1000m" → "1", 1 → "1"); compare their values.
    a, b = parse_quantity(want), parse_quantity(have)
    return a is not None and a == b


def contains(have: Any, want: Any) -> bool:
    """Whether ``have`` holds every field of ``want`` with an equal value (lists: same length)."""
    return first_difference(have, want) is None


def first_difference(have: Any, want: Any, path: str = "") -> str | None:
    """The path of the first field where ``have`` does not hold ``want`` (None when it does)."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return path or "."
        for key, value in want.items():
            if key not in have:
                return f"{path}.{key}"
            found = first_difference(have[key], value, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(want, list):
        if not isinstance(have, list) or len(have) != len(want):
            return path
        for i, (h, w) in enumerate(zip(have, want, strict=True)):
            found = first_difference(h, w, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if _scalar_equal(want, have) else path
