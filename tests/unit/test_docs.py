"""The generated API reference lists every CEL rule of the CRD, wherever in the schema it sits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tritonops.api import crd, docs


def _all_rules(value: Any) -> Iterator[dict[str, Any]]:
    """Every ``x-kubernetes-validations`` entry anywhere in ``value``: a blind walk, independent of docs.py."""
    if isinstance(value, dict):
        yield from value.get("x-kubernetes-validations", [])
        for key, sub in value.items():
            if key != "x-kubernetes-validations":
                yield from _all_rules(sub)
    elif isinstance(value, list):
        for sub in value:
            yield from _all_rules(sub)


def _listed(text: str) -> list[str]:
    """The bullets of the rules section of a rendered reference."""
    section = text.split(docs.RULES_HEADING, 1)[1]
    return [line for line in section.splitlines() if line.startswith("- ")]


def _crd_with(schema: dict[str, Any]) -> dict[str, Any]:
    empty = {"type": "object", "properties": {}}
    root = {"type": "object", "properties": {"spec": schema, "status": empty}}
    return {"spec": {"versions": [{"schema": {"openAPIV3Schema": root}}]}}


def _rule(message: str) -> dict[str, Any]:
    return {"rule": "true", "message": message}


def test_every_rule_of_the_crd_is_listed_once() -> None:
    built = crd.build_crd()
    rules = list(_all_rules(built))
    listed = _listed(docs.render(built))
    assert len(listed) == len(rules)
    assert sorted(line.split("`: ", 1)[1] for line in listed) == sorted(" ".join(r["message"].split()) for r in rules)


def test_rules_on_array_items_are_listed_with_brackets() -> None:
    listed = _listed(docs.render(crd.build_crd()))
    paths = {line.split("`", 2)[1] for line in listed}
    assert {"spec.runtime.triton.instanceGroups[]", "spec.rollout.canary.steps[]",
            "spec.rollout.canary.analysis.metrics[]", "spec.rollout.canary.analysis.metrics[].thresholdRange",
            "spec.autoscaling.metrics[]"} <= paths


def test_rules_in_nested_items_map_values_and_junctors_are_listed() -> None:
    leaf = {"type": "object", "properties": {"x": {"type": "string"}}, "x-kubernetes-validations": [_rule("leaf")]}
    spec = {
        "type": "object",
        "x-kubernetes-validations": [_rule("spec")],
        "properties": {
            "grid": {"type": "array", "items": {"type": "array", "items": leaf,
                                                "x-kubernetes-validations": [_rule("row")]}},
            "byName": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {"inner": leaf}, "x-kubernetes-validations": [_rule("value")]}},
            "either": {"anyOf": [{"x-kubernetes-validations": [_rule("any")]}], "not": leaf},
        },
    }
    text = docs.render(_crd_with(spec))
    assert _listed(text) == [
        "- `spec`: spec",
        "- `spec.grid[]`: row",
        "- `spec.grid[][]`: leaf",
        "- `spec.byName{}`: value",
        "- `spec.byName{}.inner`: leaf",
        "- `spec.either`: any",
        "- `spec.either`: leaf",
    ]
    assert len(_listed(text)) == len(list(_all_rules(_crd_with(spec))))


def test_a_rule_without_a_static_message_is_still_listed() -> None:
    spec = {"type": "object", "x-kubernetes-validations": [
        {"rule": "self.a < self.b", "messageExpression": "'a must be < b, got ' + string(self.a)"},
        {"rule": "has(self.a)"}]}
    assert _listed(docs.render(_crd_with(spec))) == [
        "- `spec`: 'a must be < b, got ' + string(self.a)",
        "- `spec`: failed rule: has(self.a)",
    ]
