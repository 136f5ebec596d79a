"""An operator upgrade restarts no model: running revisions keep their fetcher image and their template."""

from __future__ import annotations

import copy
from dataclasses import replace

from tests.factories import model_deployment
from tests.unit.test_planner import NOW, OPTS, converge
from tritonops.builders.meta import legacy_revision_of, revision_of
from tritonops.planner import Observed, plan
from tritonops.revisions import ANNOTATION_TEMPLATE, fetcher_image, resolve

UPGRADED = replace(OPTS, runtime_image="runtime:next")


def test_quantities_hash_alike() -> None:
    spec = model_deployment()["spec"]
    other = copy.deepcopy(spec)
    other["resources"]["limits"]["nvidia.com/gpu"] = "1"
    other["resources"]["requests"]["cpu"] = "1000m"
    spec["resources"]["requests"]["cpu"] = "1"
    assert revision_of("clf", spec, "img") == revision_of("clf", other, "img")
    assert legacy_revision_of("clf", spec, "img") != legacy_revision_of("clf", other, "img")


def test_an_upgrade_with_a_new_fetcher_image_and_template_restarts_nothing() -> None:
    md = model_deployment()
    observed = Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    dep = observed.deployments[stable]
    del dep["metadata"]["annotations"][ANNOTATION_TEMPLATE]  # built by a version before the stamp
    dep["spec"]["template"]["spec"]["containers"][0]["args"].remove("--metrics-config=summary_latencies=true")
    p = plan(md, observed, NOW, UPGRADED)
    assert p.apply == [] and p.scale == [] and p.delete == [] and p.status is None
    assert fetcher_image(observed.deployments[stable]) == OPTS.runtime_image


def test_a_frozen_revision_still_scales() -> None:
    md = model_deployment()
    observed = Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    del observed.deployments[stable]["metadata"]["annotations"][ANNOTATION_TEMPLATE]
    md["spec"]["replicas"] = 3
    p = plan(md, observed, NOW, UPGRADED)
    assert [o for o in p.apply if o["kind"] == "Deployment"] == []
    assert [(o["metadata"]["name"], o["spec"]) for o in p.scale] == [(stable, {"replicas": 3})]


def test_a_model_change_after_the_upgrade_gets_the_new_image() -> None:
    md = model_deployment()
    observed = Observed()
    converge(md, observed)
    md["spec"]["model"]["version"] = 2
    p = plan(md, observed, NOW, UPGRADED)
    new = next(o for o in p.apply if o["kind"] == "Deployment")
    assert new["metadata"]["name"] == revision_of("clf", md["spec"], "runtime:next")
    assert fetcher_image(new) == "runtime:next"


def test_a_revision_named_by_the_legacy_hash_is_recognised() -> None:
    md = model_deployment()
    observed = Observed()
    converge(md, observed)
    stable = md["status"]["stableRevision"]
    legacy = legacy_revision_of("clf", md["spec"], OPTS.runtime_image)
    dep = observed.deployments.pop(stable)
    dep["metadata"]["name"] = legacy
    dep["metadata"]["labels"]["tritonops.io/revision"] = legacy
    observed.deployments[legacy] = dep
    assert resolve("clf", md["spec"], "runtime:next", observed.deployments, legacy) == (legacy, OPTS.runtime_image)
