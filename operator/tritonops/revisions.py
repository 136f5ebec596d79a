"""Which revision a spec means, so that an operator upgrade restarts no model (pure; issue 10, item 2).

A revision is named by a hash of the serving-relevant spec and the fetcher (runtime) image. Two things
would otherwise make an operator upgrade roll every ModelDeployment at once, a whole-fleet reload of every
GPU model:

- a new operator version ships a new fetcher image, which changes every hash;
- the pod template the builders produce changes between versions (a new Triton flag, say), which would be
  re-applied to every running revision's Deployment, restarting its pods in place.

So a revision keeps what it was created with until the model spec itself changes:

- :func:`resolve` first looks for a running revision whose hash, computed with *its own* fetcher image,
  matches the spec (by today's hash or by the hash of earlier versions, which did not canonicalise
  quantities); only a spec no running revision matches gets a new revision with the current image;
- a Deployment stamped with an older :data:`TEMPLATE_VERSION` is *frozen*: the operator changes only its
  replicas, never its template (:func:`frozen`). Hand edits to a current revision are still reverted.

Quantities are canonicalised before hashing, so ``nvidia.com/gpu: 1`` and ``"1"`` (or ``1000m`` and ``1``)
are one revision.
"""

from __future__ import annotations

from typing import Any

from tritonops.builders.deployment import ANNOTATION_TEMPLATE, TEMPLATE_VERSION
from tritonops.builders.meta import LABEL_REVISION, legacy_revision_of, revision_of

FETCH_CONTAINER = "fetch-model"


def fetcher_image(dep: dict[str, Any]) -> str | None:
    """The fetcher image a revision's Deployment runs."""
    pod = dep.get("spec", {}).get("template", {}).get("spec", {})
    images = [c.get("image") for c in pod.get("initContainers") or [] if c.get("name") == FETCH_CONTAINER]
    return images[0] if images else None


def resolve(name: str, spec: dict[str, Any], image: str,
            deployments: dict[str, dict[str, Any]], prefer: str | None = None) -> tuple[str, str]:
    """(revision, fetcher image) for ``spec``: a running revision that matches it, else a new one.

    ``prefer``: the revision to try first (the stable one), then every other observed one.
    """
    order = sorted(deployments.values(), key=lambda d: d.get("metadata", {}).get("name") != prefer)
    for dep in order:
        revision = (dep.get("metadata", {}).get("labels") or {}).get(LABEL_REVISION)
        own = fetcher_image(dep)
        if revision and own and revision in (revision_of(name, spec, own), legacy_revision_of(name, spec, own)):
            return revision, own
    return revision_of(name, spec, image), image


def frozen(dep: dict[str, Any] | None) -> bool:
    """Whether ``dep`` was built by an earlier template version (then only its replicas change); a
    Deployment without the stamp predates it (version 1)."""
    if dep is None:
        return False
    annotations = dep.get("metadata", {}).get("annotations") or {}
    return bool(annotations.get(ANNOTATION_TEMPLATE, "1") != TEMPLATE_VERSION)
