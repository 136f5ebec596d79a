"""Never adopt what we did not create (pure): a child's name taken by someone else's object is left alone.

Children are written by server-side apply with ``force``, which would take over a pre-existing object of
the same name (a user's own Service called like the ModelDeployment, say), give it our ownerReference and
let the garbage collector delete it with the ModelDeployment. So an object the operator would write or
delete must carry our *controller* ownerReference (the ModelDeployment's uid); otherwise it is untouched
and reported as ``Degraded/ResourceConflict`` naming it and the fix.
"""

from __future__ import annotations

from typing import Any


def controlled_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether ``obj``'s controller ownerReference is the object with ``uid``."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


def _owner(obj: dict[str, Any]) -> str:
    refs = [r for r in obj.get("metadata", {}).get("ownerReferences") or [] if r.get("controller")]
    return f"controlled by {refs[0].get('kind')} {refs[0].get('name')}" if refs else "created by someone else"


def conflict_message(taken: list[dict[str, Any]], namespace: str) -> str:
    """The Degraded message for children whose names are taken."""
    names = ", ".join(f"{o['kind']} {namespace}/{o['metadata']['name']} ({_owner(o)})" for o in taken)
    return (f"{names} already exist(s) and is not this ModelDeployment's: the operator leaves it untouched and "
            "does not serve through it; delete or rename it, or give the ModelDeployment another name")
