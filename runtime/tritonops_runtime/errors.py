"""The fetcher's failure type: one human-readable line that Kubernetes shows in ``terminated.message``."""


class FetchError(Exception):
    """A fetch that cannot succeed; ``str()`` is the one-line reason (no secrets, no query strings)."""
