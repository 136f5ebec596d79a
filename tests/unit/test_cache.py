"""The watch-fed cache: newer versions win, our writes never resurrect a deleted object, selectors filter."""

from __future__ import annotations

from typing import Any

import pytest

from tritonops.cache import Cache, parse_selector

KINDS = frozenset({"Deployment", "Pod"})


def obj(name: str, rv: str, ns: str = "a", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "labels": labels,
                         "managedFields": [{"manager": "x"}]}}


def test_a_newer_version_replaces_an_older_one_never_the_reverse() -> None:
    cache = Cache(KINDS)
    cache.put("Deployment", obj("d", "10"))
    cache.put("Deployment", obj("d", "9"))  # a late answer to an earlier write
    assert cache.get("Deployment", "a", "d")["metadata"]["resourceVersion"] == "10"  # type: ignore[index]
    cache.put("Deployment", obj("d", "11"))
    assert cache.get("Deployment", "a", "d")["metadata"]["resourceVersion"] == "11"  # type: ignore[index]


def test_managed_fields_are_dropped_and_the_event_object_is_not_mutated() -> None:
    cache, event = Cache(KINDS), obj("d", "1")
    cache.put("Deployment", event)
    assert "managedFields" not in cache.get("Deployment", "a", "d")["metadata"]  # type: ignore[index]
    assert event["metadata"]["managedFields"] == [{"manager": "x"}]


def test_our_writes_refresh_known_objects_only() -> None:
    cache = Cache(KINDS)
    cache.refresh("Deployment", obj("new", "5"))  # created by us: the watch brings it, not the answer
    assert cache.get("Deployment", "a", "new") is None
    cache.put("Deployment", obj("d", "5"))
    cache.remove("Deployment", "a", "d")
    cache.refresh("Deployment", obj("d", "6"))  # an answer arriving after the watch delivered the deletion
    assert cache.get("Deployment", "a", "d") is None
    cache.put("Deployment", obj("e", "5"))
    cache.refresh("Deployment", obj("e", "7"))
    assert cache.get("Deployment", "a", "e")["metadata"]["resourceVersion"] == "7"  # type: ignore[index]


def test_non_numeric_resource_versions_take_the_latest() -> None:
    cache = Cache(KINDS)
    cache.put("Deployment", obj("d", "b"))
    cache.put("Deployment", obj("d", "a"))
    assert cache.get("Deployment", "a", "d")["metadata"]["resourceVersion"] == "a"  # type: ignore[index]


def test_list_filters_by_namespace_and_equality_selector() -> None:
    cache = Cache(KINDS)
    cache.put("Deployment", obj("one", "1", md="m", managed="t"))
    cache.put("Deployment", obj("two", "1", md="n", managed="t"))
    cache.put("Deployment", obj("three", "1", ns="b", md="m", managed="t"))
    names = [o["metadata"]["name"] for o in cache.list("Deployment", "a", "md=m,managed=t")]
    assert names == ["one"]
    assert cache.list("Deployment", "c", "md=m") == []
    assert cache.size() == {"Deployment": 3, "Pod": 0}
    assert cache.holds("Pod") and not cache.holds("Job")


@pytest.mark.parametrize("selector", ["a!=b", "a", "a in (b)"])
def test_selectors_other_than_equality_are_refused(selector: str) -> None:
    with pytest.raises(ValueError, match="only key=value"):
        parse_selector(selector)


def test_equality_selectors_parse() -> None:
    assert parse_selector("a=b, c==d") == {"a": "b", "c": "d"}


def test_a_listing_replaces_its_scope_and_reports_what_changed() -> None:
    cache = Cache(KINDS)
    for o in (obj("kept", "1"), obj("changed", "1"), obj("gone", "1"), obj("other-ns", "1", ns="b")):
        cache.put("Deployment", o)
    changed = cache.replace("Deployment", "a", [obj("kept", "1"), obj("changed", "2"), obj("new", "3")])
    assert sorted(o["metadata"]["name"] for o in changed) == ["changed", "gone", "new"]
    assert sorted(o["metadata"]["name"] for o in cache.list("Deployment", "a", "")) == ["changed", "kept", "new"]
    assert cache.get("Deployment", "b", "other-ns") is not None  # another namespace's scope is untouched
    cache.replace("Deployment", None, [obj("only", "4", ns="c")])  # the whole cluster's listing
    assert cache.size() == {"Deployment": 1, "Pod": 0}
