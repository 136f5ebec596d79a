"""The reference profile: contents, canonical bytes and a golden digest, round trips, validation errors."""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import ExampleModel
from tritonops_runtime.drift.profile import (
    FORMAT,
    build_profile,
    canonical_bytes,
    dump_profile,
    load_profile,
    output_matrix,
    profile_digest,
    validate_profile,
)
from tritonops_runtime.drift.window import evaluate_window

# The digest of golden_profile(): a change here is a change of the file format (or of how profiles are
# built) that every stored profile's digest would see.
GOLDEN_DIGEST = "sha256:f96f2d6940355a960371efa42763fa6d00d0a558e1db64801b19f41140110881"


def golden_profile() -> dict[str, Any]:
    """Built from integer draws of the legacy RandomState (its stream is frozen) scaled by powers of two
    (exact), so the input data are bit-identical on every platform and numpy version."""
    rs = np.random.RandomState(2024)
    x = rs.randint(0, 256, size=(600, 4, 4)).sum(axis=2) / 64.0
    x[:, 3] = rs.randint(0, 3, size=600)
    y = rs.randint(0, 256, size=(600, 2)) / 256.0
    return build_profile(x, y, input_names=["x"], output_names=["class"], categorical=[3], ks_sample=100)


def test_golden_digest_is_stable(tmp_path: Path) -> None:
    profile = golden_profile()
    digest = dump_profile(profile, tmp_path / "p.json")
    assert digest == profile_digest(golden_profile()) == profile_digest(profile)
    assert digest == "sha256:" + hashlib.sha256((tmp_path / "p.json").read_bytes()).hexdigest()
    assert dump_profile(golden_profile(), tmp_path / "again.json") == digest
    assert digest == GOLDEN_DIGEST


def test_canonical_bytes(tmp_path: Path) -> None:
    profile = golden_profile()
    data = canonical_bytes(profile)
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert canonical_bytes(dict(reversed(list(profile.items())))) == data
    dump_profile(profile, tmp_path / "p.json")
    assert (tmp_path / "p.json").read_bytes() == data
    assert not list(tmp_path.glob("*.partial"))


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=3000), rng.integers(0, 4, 3000), rng.exponential(size=3000)])
    profile = build_profile(x, rng.normal(size=3000), categorical=[1], metadata={"model": "m", "version": "3"})
    digest = dump_profile(profile, tmp_path / "p.json")
    assert load_profile(tmp_path / "p.json") == profile
    assert load_profile(str(tmp_path / "p.json"), digest=digest) == profile
    assert load_profile((tmp_path / "p.json").read_bytes()) == profile
    with pytest.raises(ValueError, match=r"digest sha256:.* does not match"):
        load_profile(tmp_path / "p.json", digest="sha256:" + "0" * 64)
    with pytest.raises(OSError):
        load_profile(tmp_path / "missing.json")


def test_numeric_feature_contents() -> None:
    rng = np.random.default_rng(2)
    column = rng.normal(3.0, 2.0, size=10001).astype(np.float32)
    feature = build_profile(column.reshape(-1, 1), bins=20)["inputs"][0]
    values = np.sort(column.astype(np.float64))
    assert feature["name"] == "input" and feature["kind"] == "numeric" and feature["count"] == 10001
    assert feature["edges"] == [values[math.ceil(i / 20 * 10001) - 1] for i in range(1, 20)]
    assert feature["counts"] == [501] + [500] * 19 and sum(feature["fractions"]) == pytest.approx(1.0)
    assert feature["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert feature["std"] == pytest.approx(values.std(), rel=1e-12)
    assert (feature["min"], feature["max"]) == (values[0], values[-1])
    sample = np.array(feature["sample"])
    assert len(sample) == 2000 and np.all(np.diff(sample) >= 0) and np.isin(sample, values).all()
    grid = np.linspace(-5, 11, 400)  # the stored sample's ECDF is within 1/N of the reference's
    gap = np.abs(np.searchsorted(sample, grid, "right") / 2000 - np.searchsorted(values, grid, "right") / 10001)
    assert gap.max() <= 1 / 2000


def test_ties_collapse_bins() -> None:
    column = np.concatenate([np.zeros(900), np.arange(1.0, 101.0)])  # 90% at zero: every decile is 0
    feature = build_profile(column.reshape(-1, 1))["inputs"][0]
    assert feature["edges"] == [0.0] and feature["counts"] == [900, 100]
    skewed = build_profile(np.concatenate([np.zeros(500), np.arange(1.0, 501.0)]).reshape(-1, 1))["inputs"][0]
    assert skewed["edges"] == [0.0, 100.0, 200.0, 300.0, 400.0] and skewed["counts"] == [500] + [100] * 5
    binary = build_profile(np.array([[0.0]] * 6 + [[1.0]] * 4))["inputs"][0]
    assert binary["edges"] == [0.0, 1.0] and binary["counts"] == [6, 4, 0]
    constant = build_profile(np.full((50, 1), 7.5))["inputs"][0]
    assert constant["edges"] == [7.5] and constant["counts"] == [50, 0] and constant["std"] == 0.0
    tenths = build_profile(np.full((3, 1), 0.1))["inputs"][0]  # fsum(3 x 0.1) / 3 rounds above 0.1
    assert tenths["mean"] == tenths["min"] == tenths["max"] == 0.1


def test_categorical_features() -> None:
    x = np.array([["b", 1.0], ["a", 2.0], [b"b", 2.0], ["b", 2.5]], dtype=object)
    profile = build_profile(x, categorical=[0, 1], input_names=["letter", "code"])
    letter, code = profile["inputs"]
    assert letter["categories"] == ["a", "b"] and letter["counts"] == [1, 3] and letter["fractions"] == [0.25, 0.75]
    assert code["categories"] == [1, 2, 2.5] and code["counts"] == [1, 2, 1]
    with pytest.raises(ValueError, match=r"'input': 50 categories, more than max_categories=10"):
        build_profile(np.arange(50.0).reshape(-1, 1), categorical=[0], max_categories=10)


def test_outputs_kinds_and_names() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 2))
    probs = rng.dirichlet([1.0, 1.0, 1.0, 0.01], size=300)
    argmax = build_profile(x, probs, output_names=["OUTPUT0"])["outputs"]
    assert argmax["transform"] == "argmax" and argmax["columns"] == 4
    assert argmax["features"][0]["name"] == "OUTPUT0" and argmax["features"][0]["categories"] == [0, 1, 2, 3]
    assert argmax["features"][0]["counts"] == np.bincount(probs.argmax(axis=1), minlength=4).tolist()
    labels = build_profile(x, rng.integers(0, 2, 300))["outputs"]
    assert labels["transform"] == "none" and labels["features"][0]["kind"] == "categorical"
    regression = build_profile(x, rng.normal(size=300), output_names=["y"])["outputs"]
    assert regression["features"][0]["kind"] == "numeric" and regression["features"][0]["name"] == "y"
    numeric = build_profile(x, probs, output_kind="numeric", output_names=["p"], input_names=["a", "b"])
    assert [f["name"] for f in numeric["outputs"]["features"]] == ["p[0]", "p[1]", "p[2]", "p[3]"]
    assert [f["name"] for f in numeric["inputs"]] == ["a", "b"]
    assert output_matrix(numeric, probs).shape == (300, 4)
    assert output_matrix(build_profile(x, probs), probs)[:, 0].tolist() == probs.argmax(axis=1).tolist()
    with pytest.raises(ValueError, match="output_kind='auto' cannot tell"):
        build_profile(x, rng.integers(0, 2, (300, 3)))
    with pytest.raises(ValueError, match=r"outputs of shape \(300, 3\) do not match the profile's 4"):
        output_matrix(numeric, probs[:, :3])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: build_profile(np.array([[1.0], [np.nan]])), r"feature 'input': 1 non-finite value"),
    (lambda: build_profile(np.ones((5, 3)), input_names=["a", "b"]), r"input_names: 2 names for 3 columns"),
    (lambda: build_profile(np.ones((5, 3)), input_names=["a", "a", "b"]), r"inputs\[1\].name: must be .*unique"),
    (lambda: build_profile(np.ones((5, 2)), categorical=[2]), r"categorical indices \[2\] out of range"),
    (lambda: build_profile(np.ones((5, 2)), np.ones(4)), r"outputs have 4 rows, inputs 5"),
    (lambda: build_profile(np.ones((0, 2))), r"non-empty \(rows, features\)"),
    (lambda: build_profile(np.ones((5, 2)), bins=1), r"bins must be in 2..1000"),
    (lambda: build_profile(np.array([["x"], ["y"]])), r"feature 'input' is numeric but its values are not numbers"),
])
def test_build_errors(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(profile: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        target: Any = profile
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        if value is KeyError:
            del target[last]
        else:
            target[int(last) if last.isdigit() else last] = value
    return mutate


@pytest.mark.parametrize(("mutate", "message"), [
    (_set("format", "tritonops.drift-profile/v2"), r"format: expected 'tritonops.drift-profile/v1'"),
    (_set("rows", KeyError), r"rows: missing"),
    (_set("rows", 1.5), r"rows: must be an integer >= 1, got 1.5"),
    (_set("extra", 1), r"extra: unknown field"),
    (_set("inputs", []), r"inputs: must be a list of at least 1 item"),
    (_set("inputs/0/edges/1", -100.0), r"inputs\[0\].edges: must be strictly increasing.* \(feature 'x\[0\]'\)"),
    (_set("inputs/0/counts/0", 1), r"inputs\[0\].counts: sum to .* \(feature 'x\[0\]'\)"),
    (_set("inputs/0/fractions/0", 0.5), r"inputs\[0\].fractions: must be counts / count"),
    (_set("inputs/1/sample/0", 1e9), r"inputs\[1\].sample: must be sorted.* \(feature 'x\[1\]'\)"),
    (_set("inputs/1/mean", "high"), r"inputs\[1\].mean: must be a finite number, got 'high' \(feature 'x\[1\]'\)"),
    (_set("inputs/1/kind", "ordinal"), r"inputs\[1\].kind: must be 'numeric' or 'categorical'"),
    (_set("inputs/1/name", "x[0]"), r"inputs\[1\].name: must be a non-empty unique string"),
    (_set("inputs/2/std", KeyError), r"inputs\[2\].std: missing \(feature 'x\[2\]'\)"),
    (_set("inputs/2/categories", [0, 1, 2]), r"inputs\[2\].categories: unknown field for a numeric feature"),
    (_set("inputs/3/categories/0", 1.0), r"inputs\[3\].categories\[0\]: must be a string.* \(feature 'x\[3\]'\)"),
    (_set("inputs/3/categories/0", 1), r"inputs\[3\].categories: must be unique"),
    (_set("inputs/3/count", 601), r"inputs\[3\].count: 601 is more than the profile's rows"),
    (_set("outputs/transform", "softmax"), r"outputs.transform: must be 'none' or 'argmax'"),
    (_set("outputs/columns", 3), r"outputs.features: argmax needs >= 2 columns"),
    (_set("outputs/features/0/name", "x[0]"), r"outputs.features\[0\].name: must be a non-empty unique"),
    (_set("metadata", [1]), r"metadata: must be an object"),
])
def test_validation_errors_name_the_field(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    profile = copy.deepcopy(golden_profile())
    mutate(profile)
    with pytest.raises(ValueError, match=message):
        validate_profile(profile)
    with pytest.raises(ValueError, match=message):
        load_profile(json.dumps(profile).encode())


@pytest.mark.parametrize(("data", "message"), [
    (b"{not json", r"not JSON"), (b"[1, 2]", r"profile: must be a JSON object"),
    (b'{"format": "tritonops.drift-profile/v1", "rows": NaN}', r"NaN is not allowed"),
    (b"\xff\xfe", r"not JSON"), (b"{}", r"format: missing"),
])
def test_load_rejects_malformed_files(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_profile(data)


def test_numpy_scalars_are_rejected_by_validation() -> None:
    profile = copy.deepcopy(golden_profile())
    profile["rows"] = np.int64(600)
    with pytest.raises(ValueError, match="rows: must be an integer"):
        validate_profile(profile)


def test_the_example_models_profile(example_model: ExampleModel) -> None:
    profile = load_profile(example_model.dir / "reference_profile.json", digest=example_model.summary["profileDigest"])
    assert profile["format"] == FORMAT and profile["rows"] == 2000
    assert [f["name"] for f in profile["inputs"]] == [f"INPUT0[{j}]" for j in range(4)]
    assert profile["outputs"]["transform"] == "argmax" and profile["outputs"]["features"][0]["name"] == "OUTPUT0"
    sample = np.array(example_model.sample_inputs)
    result = evaluate_window(profile, sample, method="ks", threshold=0.05)
    assert result.rows == 8 and [f.n for f in result.features] == [8] * 4
