"""The fetcher's failure type: one human-readable line that Kubernetes shows in ``terminated.message``."""

from __future__ import annotations

from tritonops_runtime import contract as c


class FetchError(Exception):
    """A fetch that cannot succeed; ``str()`` is the one-line reason (no secrets, no query strings)."""


def human_bytes(n: int) -> str:
    """``n`` in binary units for messages: ``10 MiB``, ``97.7 KiB``, ``512 B``."""
    for unit, name in ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f}".removesuffix(".0") + f" {name}"
    return f"{n} B"


def size_limit_error(subject: str, max_bytes: int, size: int | None = None) -> FetchError:
    """The failure of anything over the size limit, naming the limit and how to raise it.

    ``subject`` is what is too big (a URL, a path, the content of an archive); ``size`` its size when known.
    """
    what = f"{subject} is {size} bytes, over" if size is not None else f"{subject} exceeds"
    return FetchError(f"{what} the size limit of {max_bytes} bytes ({human_bytes(max_bytes)}): raise "
                      f"{c.MAX_SIZE_FIELD} ({c.ENV_MAX_BYTES}) to allow a larger model")
