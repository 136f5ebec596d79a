"""The generated CRD: current on disk, structural, and bounded so CEL stays within its cost budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tritonops.api import crd


def _walk(schema: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{where}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{where}{{}}")


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crd_is_current() -> None:
    assert crd.check(crd.default_path()) is None


def test_every_string_and_list_in_spec_is_bounded() -> None:
    for where, node in _walk(_root()["properties"]["spec"], "spec"):
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, f"{where} has no maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{where} has no maxItems"
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{where} has no maxProperties"


def test_schema_is_structural() -> None:
    for where, node in _walk(_root()):
        assert "$ref" not in node, where
        assert "type" in node or node.get("x-kubernetes-int-or-string") or \
            node.get("x-kubernetes-preserve-unknown-fields"), f"{where} has no type"


def test_every_rule_message_names_a_field_and_says_what_to_do() -> None:
    rules = [r for _, node in _walk(_root()) for r in node.get("x-kubernetes-validations", [])]
    assert len(rules) >= 12
    for r in rules:
        assert r["message"].startswith(("spec.", "metadata.", "gpus", "each spec", "thresholdRange",
                                        "autoscaling metric")), r["message"]


def test_scale_subresource_and_printer_columns() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Ready", "Model", "Stable", "Canary", "Weight", "Phase", "Drift", "Retraining", "Age"]
