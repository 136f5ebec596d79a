"""Small constructors for structural OpenAPI v3 schemas (the dialect CustomResourceDefinitions accept).

Every string gets a ``maxLength`` and every list a ``maxItems`` so that CEL rules stay within the API
server's cost budget; callers cannot forget because the constructors require them.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _describe(schema: Schema, description: str) -> Schema:
    if description:
        schema["description"] = description
    return schema


def string(
    description: str = "",
    *,
    max_length: int,
    enum: tuple[str, ...] = (),
    pattern: str = "",
    default: str | None = None,
    min_length: int | None = None,
) -> Schema:
    """A string with a mandatory length bound."""
    s: Schema = {"type": "string", "maxLength": max_length}
    if min_length is not None:
        s["minLength"] = min_length
    if enum:
        s["enum"] = list(enum)
    if pattern:
        s["pattern"] = pattern
    if default is not None:
        s["default"] = default
    return _describe(s, description)


def integer(
    description: str = "",
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
    fmt: str = "int32",
) -> Schema:
    """An integer, bounded where the caller knows the bounds."""
    s: Schema = {"type": "integer", "format": fmt}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    if default is not None:
        s["default"] = default
    return _describe(s, description)


def number(description: str = "", *, minimum: float | None = None, maximum: float | None = None,
           default: float | None = None) -> Schema:
    """A floating point number."""
    s: Schema = {"type": "number"}
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    if default is not None:
        s["default"] = default
    return _describe(s, description)


def boolean(description: str = "", *, default: bool | None = None) -> Schema:
    """A boolean."""
    s: Schema = {"type": "boolean"}
    if default is not None:
        s["default"] = default
    return _describe(s, description)


def array(items: Schema, description: str = "", *, max_items: int, min_items: int | None = None,
          list_type: str = "", map_keys: tuple[str, ...] = ()) -> Schema:
    """A list with a mandatory item bound; ``list_type`` sets ``x-kubernetes-list-type``."""
    s: Schema = {"type": "array", "items": items, "maxItems": max_items}
    if min_items is not None:
        s["minItems"] = min_items
    if list_type:
        s["x-kubernetes-list-type"] = list_type
    if map_keys:
        s["x-kubernetes-list-map-keys"] = list(map_keys)
    return _describe(s, description)


def string_map(description: str = "", *, max_properties: int, value_max_length: int) -> Schema:
    """A map of strings (labels, node selectors, parameters)."""
    s: Schema = {
        "type": "object",
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": value_max_length},
    }
    return _describe(s, description)


def rule(expr: str, message: str, *, field_path: str = "", reason: str = "FieldValueInvalid") -> Schema:
    """One CEL ``x-kubernetes-validations`` entry; ``message`` must name the field and the fix."""
    r: Schema = {"rule": expr, "message": message}
    if field_path:
        r["fieldPath"] = field_path
    if reason != "FieldValueInvalid":
        r["reason"] = reason
    return r


def obj(
    properties: dict[str, Schema],
    description: str = "",
    *,
    required: tuple[str, ...] = (),
    rules: tuple[Schema, ...] = (),
    default: dict[str, Any] | None = None,
    max_properties: int | None = None,
) -> Schema:
    """An object with known properties, optional required list and CEL rules."""
    s: Schema = {"type": "object", "properties": properties}
    if required:
        s["required"] = list(required)
    if rules:
        s["x-kubernetes-validations"] = list(rules)
    if default is not None:
        s["default"] = default
    if max_properties is not None:
        s["maxProperties"] = max_properties
    return _describe(s, description)


def opaque(description: str = "") -> Schema:
    """A subtree the API server stores as given (Kubernetes types we pass through untouched)."""
    return _describe({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, description)


QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


def quantity_map(description: str = "") -> Schema:
    """A ResourceList: resource name -> quantity (int or string)."""
    s: Schema = {
        "type": "object",
        "maxProperties": 16,
        "additionalProperties": {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
        },
    }
    return _describe(s, description)
