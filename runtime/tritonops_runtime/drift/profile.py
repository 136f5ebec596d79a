"""The reference profile: what the drift monitor compares live windows against, built from training data.

Format (JSON, ``"format": "tritonops.drift-profile/v1"``)::

    {"format": ..., "rows": n, "bins": 10, "ksSample": 2000,
     "inputs": [feature, ...],
     "outputs": null | {"transform": "none" | "argmax", "columns": k, "features": [feature, ...]}}

    numeric feature:     {"name", "kind": "numeric", "count", "mean", "std", "min", "max",
                          "edges": [...], "counts": [...], "fractions": [...], "sample": [...]}
    categorical feature: {"name", "kind": "categorical", "count", "categories": [...], "counts": [...],
                          "fractions": [...]}

Design choices:

- **Edges** are the reference's ``i/bins`` quantiles (i = 1..bins-1), taken as order statistics (the
  "inverted CDF" definition: the smallest value with at least that fraction at or below it), duplicates
  removed, so a feature with ties (a spike at 0) simply has fewer bins. Order statistics are data values:
  no interpolation arithmetic, hence the same edges on every platform. Bins are right-closed with open outer
  bins (see ``stats.py``); ``counts``/``fractions`` are the reference's own counts in them, not an assumed
  1/bins, so ties cost nothing.
- **KS reference data**: the profile keeps no raw rows, so each numeric feature stores a bounded sample of at
  most ``ksSample`` (default 2000) values: the whole sorted column when it is that small, otherwise the order
  statistics at evenly spaced ranks ``floor((2i+1) n / 2N)``. That is deterministic (no random generator
  whose stream could change between numpy versions) and its ECDF stays within about 1/N of the full
  reference's, so KS against it is KS against the reference up to that resolution, and the p-value (which
  assumes an i.i.d. sample of N) is slightly conservative. The live window is compared with exactly this
  array: ``scipy.stats.ks_2samp(window, feature["sample"], method="asymp")`` gives the same numbers.
- **mean/std** are computed with ``math.fsum`` (correctly rounded sums), so they, too, are bit-identical
  wherever the profile is built; std is the population one (ddof=0).
- **Categories** are canonicalised (integral floats become ints, bytes are decoded) and sorted (numbers first,
  then strings); more than ``max_categories`` distinct values is an error (treat such a feature as numeric).
- **Outputs**: ``transform`` says how the live output tensor becomes output features. ``argmax`` turns a
  (n, k) score/probability matrix into the predicted class (a categorical feature with classes 0..k-1, all
  listed even when never predicted); ``none`` uses the columns as they are. ``output_kind="auto"`` picks:
  1-D (or one column) integer/bool/string labels -> categorical; 1-D float -> numeric; a float matrix of
  k >= 2 columns -> argmax; anything else needs an explicit kind.
- **Digest**: the file is canonical JSON (sorted keys, no spaces, no NaN), and ``dump_profile`` returns
  ``sha256:<hex>`` of exactly the bytes it wrote. Nothing time- or host-dependent goes into a profile, so the
  same data always gives the same digest.
- ``load_profile`` validates everything the detectors rely on and raises ValueError naming the field.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NoReturn

import numpy as np
import numpy.typing as npt

from tritonops_runtime.drift.stats import Category, bin_counts, category_key, numeric_column, tally

FORMAT: Final = "tritonops.drift-profile/v1"
DEFAULT_BINS: Final = 10
DEFAULT_KS_SAMPLE: Final = 2000
MAX_CATEGORIES: Final = 1000
OutputKind = Literal["numeric", "categorical", "auto"]

__all__ = ["DEFAULT_BINS", "DEFAULT_KS_SAMPLE", "FORMAT", "build_profile", "canonical_bytes", "dump_profile",
           "load_profile", "output_matrix", "profile_digest", "validate_profile"]
_NUMERIC_KEYS: Final = frozenset({"name", "kind", "count", "mean", "std", "min", "max", "edges", "counts",
                                  "fractions", "sample"})
_CATEGORICAL_KEYS: Final = frozenset({"name", "kind", "count", "categories", "counts", "fractions"})
_TOP_KEYS: Final = frozenset({"format", "rows", "bins", "ksSample", "inputs", "outputs", "metadata"})


# --- building --------------------------------------------------------------------------------------------

def _names(names: Sequence[str] | None, count: int, default: str, what: str) -> list[str]:
    """One name per column, or one base name expanded to ``base[j]`` (kept as is for a single column)."""
    given = [default] if names is None else [str(name) for name in names]
    if not given or any(not name for name in given):
        raise ValueError(f"{what}: names must be non-empty strings")
    if len(given) == count:
        return given
    if len(given) == 1:
        return [f"{given[0]}[{j}]" for j in range(count)]
    raise ValueError(f"{what}: {len(given)} names for {count} columns")


def _numeric_feature(name: str, values: npt.NDArray[Any], bins: int, ks_sample: int) -> dict[str, Any]:
    column = numeric_column(values, name)
    bad = int(np.count_nonzero(~np.isfinite(column)))
    if bad:
        raise ValueError(f"feature {name!r}: {bad} non-finite value(s) in the reference data")
    ordered = np.sort(column)
    n = len(ordered)
    ranks = [(i * n + bins - 1) // bins - 1 for i in range(1, bins)]
    edges = np.unique(ordered[ranks])
    counts = bin_counts(edges, ordered)
    mean = min(max(math.fsum(ordered.tolist()) / n, ordered[0]), ordered[-1])  # the division may round outside
    std = math.sqrt(math.fsum(((ordered - mean) ** 2).tolist()) / n)
    size = min(n, ks_sample)
    picks = ((2 * np.arange(size, dtype=np.int64) + 1) * n) // (2 * size)
    return {"name": name, "kind": "numeric", "count": n, "mean": float(mean), "std": std,
            "min": float(ordered[0]), "max": float(ordered[-1]), "edges": edges.tolist(),
            "counts": counts.tolist(), "fractions": (counts / n).tolist(), "sample": ordered[picks].tolist()}


def _sort_key(category: Category) -> tuple[bool, Any]:
    return isinstance(category, str), category


def _categorical_feature(name: str, values: npt.NDArray[Any], max_categories: int,
                         classes: int = 0) -> dict[str, Any]:
    counted = tally(np.asarray(values))
    for label in range(classes):  # argmax outputs: every class is listed, predicted or not
        counted.setdefault(label, 0)
    n = sum(counted.values())
    if n != len(values):
        raise ValueError(f"feature {name!r}: {len(values) - n} missing value(s) in the reference data")
    if len(counted) > max_categories:
        raise ValueError(f"feature {name!r}: {len(counted)} categories, more than max_categories="
                         f"{max_categories} (treat it as numeric, or raise the limit)")
    categories = sorted(counted, key=_sort_key)
    counts = [counted[c] for c in categories]
    return {"name": name, "kind": "categorical", "count": n, "categories": categories, "counts": counts,
            "fractions": [c / n for c in counts]}


def _output_plan(outputs: npt.NDArray[Any], kind: str) -> tuple[str, int, str]:
    """(transform, columns, feature kind) for a reference output tensor."""
    if outputs.ndim not in (1, 2) or (outputs.ndim == 2 and outputs.shape[1] == 0):
        raise ValueError(f"outputs must be 1-D or 2-D with at least one column, not shape {outputs.shape}")
    columns = 1 if outputs.ndim == 1 else int(outputs.shape[1])
    if kind == "auto":
        if columns == 1:
            kind = "categorical" if outputs.dtype.kind in "biuUSO" else "numeric"
        elif outputs.dtype.kind == "f":
            kind = "categorical"
        else:
            raise ValueError(f"output_kind='auto' cannot tell what a {outputs.dtype} matrix of {columns} columns "
                             "is: pass output_kind='numeric' or 'categorical'")
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"output_kind must be 'numeric', 'categorical' or 'auto', not {kind!r}")
    if kind == "categorical" and columns > 1:
        if outputs.dtype.kind not in "biuf":
            raise ValueError("categorical outputs with several columns are scores (argmax): they must be numbers")
        return "argmax", columns, kind
    return "none", columns, kind


def output_matrix(profile: Mapping[str, Any], outputs: npt.ArrayLike) -> npt.NDArray[Any]:
    """The output features (n, f) of a live (or reference) output tensor, per the profile's output transform."""
    spec = profile.get("outputs")
    if not spec:
        raise ValueError("the drift profile has no outputs")
    array = np.asarray(outputs)
    matrix = array.reshape(-1, 1) if array.ndim == 1 else array
    if matrix.ndim != 2 or matrix.shape[1] != spec["columns"]:
        raise ValueError(f"outputs of shape {array.shape} do not match the profile's {spec['columns']} "
                         "output column(s)")
    if spec["transform"] == "argmax":
        labels: npt.NDArray[np.intp] = np.argmax(numeric_column(matrix, spec["features"][0]["name"]), axis=1)
        return labels.reshape(-1, 1)
    return matrix


def _output_spec(outputs: npt.NDArray[Any], names: Sequence[str] | None, kind: str, max_categories: int,
                 bins: int, ks_sample: int) -> dict[str, Any]:
    transform, columns, feature_kind = _output_plan(outputs, kind)
    count = 1 if transform == "argmax" else columns
    out_names = _names(names, count, "output", "output_names")
    spec: dict[str, Any] = {"transform": transform, "columns": columns,
                            "features": [{"name": out_names[0]}] if transform == "argmax" else []}
    matrix = output_matrix({"outputs": spec}, outputs)
    classes = columns if transform == "argmax" else 0
    spec["features"] = [
        _categorical_feature(out_names[j], matrix[:, j], max(max_categories, classes), classes)
        if feature_kind == "categorical" else _numeric_feature(out_names[j], matrix[:, j], bins, ks_sample)
        for j in range(count)]
    return spec


def build_profile(inputs: npt.ArrayLike, outputs: npt.ArrayLike | None = None, *,
                  input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
                  categorical: Sequence[int] = (), bins: int = DEFAULT_BINS, output_kind: OutputKind = "auto",
                  ks_sample: int = DEFAULT_KS_SAMPLE, max_categories: int = MAX_CATEGORIES,
                  metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The reference profile of ``inputs`` (n, f) and optionally ``outputs`` (n,) or (n, k) from the same rows.

    ``input_names``/``output_names``: one per feature, or one base name expanded to ``base[j]``.
    ``categorical``: the indices of the categorical input columns. ``metadata``: free-form JSON kept as is
    (anything time-dependent in it changes the digest). Raises ValueError on unusable data.
    """
    x = np.asarray(inputs)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"inputs must be a non-empty (rows, features) array, not shape {x.shape}")
    if not 2 <= bins <= 1000 or ks_sample < 1 or max_categories < 1:
        raise ValueError("bins must be in 2..1000, ks_sample and max_categories >= 1")
    cats = {int(j) for j in categorical}
    if any(not 0 <= j < x.shape[1] for j in cats):
        raise ValueError(f"categorical indices {sorted(cats)} out of range for {x.shape[1]} input columns")
    names = _names(input_names, x.shape[1], "input", "input_names")
    profile: dict[str, Any] = {
        "format": FORMAT, "rows": int(x.shape[0]), "bins": bins, "ksSample": ks_sample, "outputs": None,
        "inputs": [_categorical_feature(name, x[:, j], max_categories) if j in cats
                   else _numeric_feature(name, x[:, j], bins, ks_sample) for j, name in enumerate(names)]}
    if outputs is not None:
        y = np.asarray(outputs)
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ValueError(f"outputs have {y.shape[0] if y.ndim else 0} rows, inputs {x.shape[0]}")
        profile["outputs"] = _output_spec(y, output_names, output_kind, max_categories, bins, ks_sample)
    if metadata is not None:
        profile["metadata"] = json.loads(json.dumps(dict(metadata), allow_nan=False))
    return validate_profile(profile)


# --- files and digests -----------------------------------------------------------------------------------

def canonical_bytes(profile: Mapping[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII, no NaN/Infinity."""
    return json.dumps(profile, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def profile_digest(profile: Mapping[str, Any]) -> str:
    """``sha256:<hex>`` of the profile's canonical bytes (what ``dump_profile`` writes)."""
    return "sha256:" + hashlib.sha256(canonical_bytes(profile)).hexdigest()


def dump_profile(profile: Mapping[str, Any], path: str | os.PathLike[str]) -> str:
    """Validate and write the profile (atomically: a temporary file, then a rename); returns the
    ``sha256:<hex>`` digest of exactly the bytes written."""
    data = canonical_bytes(validate_profile(profile))
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, target)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"invalid drift profile: {name} is not allowed")


def load_profile(source: str | os.PathLike[str] | bytes, *, digest: str | None = None) -> dict[str, Any]:
    """Read (a path; bytes are the content itself) and validate a profile; with ``digest``, the bytes must
    have that ``sha256:<hex>`` digest. ValueError naming the problem; OSError if the file cannot be read."""
    data = bytes(source) if isinstance(source, bytes | bytearray | memoryview) else Path(source).read_bytes()
    if digest is not None:
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ValueError(f"invalid drift profile: digest {actual} does not match the expected {digest}")
    try:
        parsed = json.loads(data, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"invalid drift profile: not JSON: {err}") from None
    return validate_profile(parsed)


# --- validation ------------------------------------------------------------------------------------------

def _fail(where: str, problem: str) -> NoReturn:
    raise ValueError(f"invalid drift profile: {where}: {problem}")


def _field(obj: Mapping[str, Any], key: str, at: Callable[[str], str] = str) -> Any:
    if key not in obj:
        _fail(at(key), "missing")
    return obj[key]


def _integer(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(where, f"must be a finite number, got {value!r}")
    return float(value)


def _list(value: Any, where: str, item: Callable[[Any, str], Any], *, min_items: int = 0) -> list[Any]:
    if not isinstance(value, list) or len(value) < min_items:
        _fail(where, f"must be a list of at least {min_items} item(s)")
    return [item(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _category(value: Any, where: str) -> Category:
    canonical = category_key(value) if isinstance(value, int | float | str) else None
    if isinstance(value, bool) or canonical is None or type(canonical) is not type(value):
        _fail(where, f"must be a string, an integer or a non-integral finite number, got {value!r}")
    return value


def _histogram(feature: Mapping[str, Any], at: Callable[[str], str], count: int) -> int:
    """Check counts and fractions; returns the number of bins."""
    counts = _list(_field(feature, "counts", at), at("counts"), lambda v, w: _integer(v, w, 0), min_items=1)
    if sum(counts) != count:
        _fail(at("counts"), f"sum to {sum(counts)}, not the feature's count {count}")
    fractions = _list(_field(feature, "fractions", at), at("fractions"), _number)
    if len(fractions) != len(counts) or any(abs(f - c / count) > 1e-9 for f, c in zip(fractions, counts, strict=True)):
        _fail(at("fractions"), "must be counts / count, one per bin")
    return len(counts)


def _numeric(feature: Mapping[str, Any], at: Callable[[str], str], bins: int, ks_sample: int, count: int) -> None:
    stats = {key: _number(_field(feature, key, at), at(key)) for key in ("mean", "std", "min", "max")}
    if stats["std"] < 0 or not stats["min"] <= stats["mean"] <= stats["max"]:
        _fail(at("mean"), "needs std >= 0 and min <= mean <= max")
    edges = _list(_field(feature, "edges", at), at("edges"), _number, min_items=1)
    if len(edges) >= bins or any(a >= b for a, b in itertools.pairwise(edges)):
        _fail(at("edges"), f"must be strictly increasing, at most {bins - 1} of them")
    if _histogram(feature, at, count) != len(edges) + 1:
        _fail(at("counts"), f"must have one bin more than the edges ({len(edges) + 1})")
    sample = _list(_field(feature, "sample", at), at("sample"), _number, min_items=1)
    if len(sample) > min(count, ks_sample) or any(a > b for a, b in itertools.pairwise(sample)):
        _fail(at("sample"), f"must be sorted, at most {min(count, ks_sample)} values")


def _categorical(feature: Mapping[str, Any], at: Callable[[str], str], count: int) -> None:
    categories = _list(_field(feature, "categories", at), at("categories"), _category, min_items=1)
    if len(set(categories)) != len(categories):
        _fail(at("categories"), "must be unique")
    if _histogram(feature, at, count) != len(categories):
        _fail(at("counts"), "must have one count per category")


def _feature_body(feature: Mapping[str, Any], at: Callable[[str], str], profile: Mapping[str, Any]) -> None:
    kind = _field(feature, "kind", at)
    allowed = {"numeric": _NUMERIC_KEYS, "categorical": _CATEGORICAL_KEYS}.get(kind)
    if allowed is None:
        _fail(at("kind"), f"must be 'numeric' or 'categorical', got {kind!r}")
    if extra := sorted(set(feature) - allowed):
        _fail(at(extra[0]), f"unknown field for a {kind} feature")
    count = _integer(_field(feature, "count", at), at("count"), 1)
    if count > profile["rows"]:
        _fail(at("count"), f"{count} is more than the profile's rows ({profile['rows']})")
    if kind == "numeric":
        _numeric(feature, at, profile["bins"], profile["ksSample"], count)
    else:
        _categorical(feature, at, count)


def _feature(feature: Any, where: str, profile: Mapping[str, Any], names: set[str]) -> None:
    if not isinstance(feature, dict):
        _fail(where, "must be an object")

    def at(key: str) -> str:
        return f"{where}.{key}"

    name = _field(feature, "name", at)
    if not isinstance(name, str) or not name or name in names:
        _fail(at("name"), f"must be a non-empty unique string, got {name!r}")
    names.add(name)
    try:
        _feature_body(feature, at, profile)
    except ValueError as err:
        raise ValueError(f"{err} (feature {name!r})") from None


def _outputs(spec: Any, profile: Mapping[str, Any], names: set[str]) -> None:
    if not isinstance(spec, dict) or set(spec) != {"transform", "columns", "features"}:
        _fail("outputs", "must be null or an object with exactly transform, columns and features")
    transform, columns = spec["transform"], _integer(spec["columns"], "outputs.columns", 1)
    features = _list(spec["features"], "outputs.features", lambda v, w: v, min_items=1)
    for i, feature in enumerate(features):
        _feature(feature, f"outputs.features[{i}]", profile, names)
    if transform == "argmax":
        if columns < 2 or len(features) != 1 or features[0]["kind"] != "categorical" \
                or features[0]["categories"] != list(range(columns)):
            _fail("outputs.features", "argmax needs >= 2 columns and one categorical feature with classes "
                  "0..columns-1")
    elif transform == "none":
        if len(features) != columns:
            _fail("outputs.features", f"must have one feature per column ({columns})")
    else:
        _fail("outputs.transform", f"must be 'none' or 'argmax', got {transform!r}")


def validate_profile(profile: Any) -> dict[str, Any]:
    """Check a parsed profile against the v1 format; returns it unchanged, or raises ValueError naming the
    field (``inputs[2].edges (feature 'age'): must be strictly increasing``)."""
    if not isinstance(profile, dict):
        _fail("profile", "must be a JSON object")
    found = _field(profile, "format")
    if found != FORMAT:
        _fail("format", f"expected {FORMAT!r}, got {found!r}")
    if extra := sorted(set(profile) - _TOP_KEYS):
        _fail(extra[0], "unknown field")
    _integer(_field(profile, "rows"), "rows", 1)
    _integer(_field(profile, "bins"), "bins", 2)
    _integer(_field(profile, "ksSample"), "ksSample", 1)
    names: set[str] = set()
    inputs = _list(_field(profile, "inputs"), "inputs", lambda v, w: v, min_items=1)
    for i, feature in enumerate(inputs):
        _feature(feature, f"inputs[{i}]", profile, names)
    outputs = _field(profile, "outputs")
    if outputs is not None:
        _outputs(outputs, profile, names)
    if "metadata" in profile and not isinstance(profile["metadata"], dict):
        _fail("metadata", "must be an object")
    return profile
