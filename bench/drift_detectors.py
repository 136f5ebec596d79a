"""The drift detectors' cost per window against scipy (and third-party libraries), their false-positive rate
without drift, and how many windows they need to declare a mean shift.

Method:

- **Data.** ``features`` columns, half normal and half lognormal (skewed), with random location and scale;
  the reference profile is ``drift.profile.build_profile`` of ``ref_rows`` rows (10 quantile bins, the
  default KS sample of 2000 values per feature). Every window is ``rows`` fresh rows of the same law.
- **Cost** (one window of 10k rows x 100 features by default): ``drift.window.evaluate_window`` per method at
  the operator's default threshold (psi 0.2, js 0.1, ks and chi2 alpha 0.05 after Holm), against the
  straightforward scipy code on exactly the same inputs, per feature: ``ks_2samp(window, profile sample,
  method="asymp")``; ``chi2_contingency`` of the (reference counts, live counts) table on the profile's bins
  (no continuity correction); ``scipy.spatial.distance.jensenshannon`` of the two histograms (base 2); and
  for PSI, which scipy lacks, the smoothed formula in numpy. The baselines bin the window the same way
  (``searchsorted`` on the profile's edges) and skip the correction and decision (negligible). Both sides
  must agree (statistic and p-value to 1e-9 relative): a baseline that computes something else would make
  the ratio meaningless, so disagreement fails the bench. Ours and scipy alternate in each repeat; the
  reported figure is the median over repeats, and the ratio is ours / scipy (below 1: ours is faster).
  ``ks_2samp``'s default ``method="auto"`` is not timed: it computes the exact distribution (O(n m) per
  feature) at these sizes, which ``stats.py`` chose not to.
- **Third-party libraries**, when their throwaway venvs exist (``hack/bench.sh --thirdparty`` creates them
  under ``~/.cache/tritonops/bench-venvs``, or ``$TRITONOPS_BENCH_VENVS``): alibi-detect and evidently are
  timed on the same window and reference by ``bench/thirdparty.py`` in a subprocess (not interleaved with
  ours: another process, other imports). Otherwise the JSON and the table say why they are absent.
- **False positives**: ``fpr_windows`` windows without drift, each evaluated by every method: the share of
  windows flagged drifted, the share of features flagged, and the drift declarations a tracker with
  ``consecutiveWindows=3`` (``drift.window.advance``) would have made.
- **Detection delay**: per trial, ``pre`` clean windows, then windows in which the first tenth of the
  features (at least one) is shifted by k standard deviations (k = 0.25, 0.5, 1); the delay is the number
  of shifted windows until the tracker declares drift (3, or less when a clean window just before the shift
  was flagged), or none within ``horizon`` windows. All methods see the same windows.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import spatial, stats

from bench.common import ROOT, BenchError, emit, parse_args, ratio, table, write_result
from tritonops.api.schema_drift import DEFAULT_THRESHOLDS
from tritonops_runtime.drift.profile import build_profile
from tritonops_runtime.drift.stats import EPSILON, METHODS
from tritonops_runtime.drift.window import TrackerState, advance, evaluate_window

NAME = "drift_detectors"
CONSECUTIVE = 3
SHIFTED_SHARE = 10  # one feature in this many is shifted (at least one)
SHIFTS = (0.25, 0.5, 1.0)
LIBRARIES = ("alibi-detect", "evidently")
ENV_VENVS = "TRITONOPS_BENCH_VENVS"
Array = npt.NDArray[np.float64]
Baseline = Callable[[Mapping[str, Any], Array], tuple[Array, Array]]


@dataclass(frozen=True)
class Sizes:
    rows: int
    features: int
    ref_rows: int
    repeats: int
    fpr_windows: int
    trials: int
    pre: int
    horizon: int
    thirdparty_repeats: int


DEFAULT = Sizes(rows=10_000, features=100, ref_rows=20_000, repeats=7, fpr_windows=200, trials=5, pre=2,
                horizon=8, thirdparty_repeats=3)
SMOKE = Sizes(rows=500, features=8, ref_rows=2_000, repeats=1, fpr_windows=4, trials=1, pre=1, horizon=4,
              thirdparty_repeats=0)


def shifted_features(sizes: Sizes) -> int:
    return max(1, sizes.features // SHIFTED_SHARE)


# --- data ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Law:
    """Each feature's distribution: normal (loc, scale) or lognormal (sigma), scaled and shifted."""

    loc: Array
    scale: Array
    lognormal: Array  # bool per feature

    @staticmethod
    def random(features: int, rng: np.random.Generator) -> Law:
        return Law(rng.uniform(-5, 5, features), rng.uniform(0.5, 3, features), np.arange(features) % 2 == 1)

    def std(self) -> Array:
        """Each feature's standard deviation (lognormal sigma 0.5: sqrt((e^s2 - 1) e^s2))."""
        s2 = 0.25
        return np.asarray(self.scale * np.where(self.lognormal, np.sqrt((np.exp(s2) - 1) * np.exp(s2)), 1.0))

    def draw(self, rows: int, rng: np.random.Generator, shift: float = 0.0, shifted: int = 0) -> Array:
        """``rows`` rows; the first ``shifted`` features moved by ``shift`` standard deviations."""
        z = rng.standard_normal((rows, len(self.loc)))
        x = np.asarray(self.loc + self.scale * np.where(self.lognormal, np.exp(0.5 * z), z), dtype=np.float64)
        x[:, :shifted] += shift * self.std()[:shifted]
        return x


# --- the scipy / numpy baselines (per feature, on the profile's bins and sample) -------------------------

def _histograms(profile: Mapping[str, Any], window: Array) -> list[tuple[Array, Array]]:
    out = []
    for j, feature in enumerate(profile["inputs"]):
        live = np.bincount(np.searchsorted(feature["edges"], window[:, j], side="left"),
                           minlength=len(feature["edges"]) + 1)
        out.append((np.asarray(feature["counts"], dtype=np.float64), live.astype(np.float64)))
    return out


def scipy_psi(profile: Mapping[str, Any], window: Array) -> tuple[Array, Array]:
    scores = []
    for ref, live in _histograms(profile, window):
        e = (ref / ref.sum() + EPSILON) / (1 + len(ref) * EPSILON)
        a = (live / live.sum() + EPSILON) / (1 + len(live) * EPSILON)
        scores.append(np.sum((a - e) * np.log(a / e)))
    return np.asarray(scores), np.full(len(scores), np.nan)


def scipy_js(profile: Mapping[str, Any], window: Array) -> tuple[Array, Array]:
    scores = [spatial.distance.jensenshannon(ref, live, base=2) for ref, live in _histograms(profile, window)]
    return np.asarray(scores), np.full(len(scores), np.nan)


def scipy_ks(profile: Mapping[str, Any], window: Array) -> tuple[Array, Array]:
    results = [stats.ks_2samp(window[:, j], feature["sample"], method="asymp")
               for j, feature in enumerate(profile["inputs"])]
    return np.asarray([r.statistic for r in results]), np.asarray([r.pvalue for r in results])


def scipy_chi2(profile: Mapping[str, Any], window: Array) -> tuple[Array, Array]:
    statistics_, p_values = [], []
    for ref, live in _histograms(profile, window):
        table_ = np.vstack([ref, live])
        result = stats.chi2_contingency(table_[:, table_.sum(axis=0) > 0], correction=False)
        statistics_.append(result.statistic)
        p_values.append(result.pvalue)
    return np.asarray(statistics_), np.asarray(p_values)


BASELINES: dict[str, Baseline] = {"psi": scipy_psi, "js": scipy_js, "ks": scipy_ks, "chi2": scipy_chi2}
BASELINE_API = {"psi": "numpy formula (scipy has no PSI)", "js": "scipy.spatial.distance.jensenshannon",
                "ks": "scipy.stats.ks_2samp(method='asymp')", "chi2": "scipy.stats.chi2_contingency"}


def ours(profile: Mapping[str, Any], window: Array, method: str) -> tuple[bool, Array, Array, int]:
    """(window drifted, statistics, p-values (NaN for psi/js), features flagged) of ``evaluate_window``."""
    result = evaluate_window(profile, window, method=method, threshold=DEFAULT_THRESHOLDS[method])
    p = np.asarray([np.nan if f.p_value is None else f.p_value for f in result.features])
    return result.drifted, np.asarray([f.statistic for f in result.features]), p, len(result.drifted_features)


def agree(method: str, profile: Mapping[str, Any], window: Array) -> float:
    """The largest relative difference between ours and the baseline; BenchError beyond 1e-9."""
    _, our_stat, our_p, _ = ours(profile, window, method)
    base_stat, base_p = BASELINES[method](profile, window)
    def relative(a: Array, b: Array) -> float:
        both = ~(np.isnan(a) & np.isnan(b))
        return float(np.max(np.abs(a - b)[both] / np.maximum(np.abs(b[both]), 1e-12), initial=0.0))

    diff = max(relative(our_stat, base_stat), relative(our_p, base_p))
    if diff > 1e-9:
        raise BenchError(f"{method}: ours and {BASELINE_API[method]} disagree (relative difference {diff:.3g})")
    return diff


# --- cost ------------------------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cost(profile: Mapping[str, Any], window: Array, repeats: int) -> dict[str, dict[str, Any]]:
    """Seconds per window, ours and the baseline alternating (which goes first alternates too)."""
    seconds: dict[str, dict[str, list[float]]] = {m: {"ours": [], "scipy": []} for m in METHODS}
    for r in range(repeats):
        for method in METHODS:
            pair = [("ours", lambda m=method: ours(profile, window, m)),
                    ("scipy", lambda m=method: BASELINES[m](profile, window))]
            for side, fn in pair if r % 2 == 0 else pair[::-1]:
                seconds[method][side].append(timed(fn))
    out = {}
    for method in METHODS:
        mine, theirs = statistics.median(seconds[method]["ours"]), statistics.median(seconds[method]["scipy"])
        out[method] = {"oursSeconds": mine, "scipySeconds": theirs, "ratio": ratio(mine, theirs),
                       "oursAll": seconds[method]["ours"], "scipyAll": seconds[method]["scipy"],
                       "baseline": BASELINE_API[method], "relativeDifference": agree(method, profile, window)}
    return out


# --- false positives and detection delay -----------------------------------------------------------------

def false_positives(profile: Mapping[str, Any], law: Law, sizes: Sizes, rng: np.random.Generator) -> dict[str, Any]:
    """Windows, features and declarations flagged by each method on ``fpr_windows`` windows without drift."""
    windows = dict.fromkeys(METHODS, 0)
    features = dict.fromkeys(METHODS, 0)
    state = {m: TrackerState() for m in METHODS}
    for _ in range(sizes.fpr_windows):
        window = law.draw(sizes.rows, rng)
        for method in METHODS:
            drifted, _, _, flagged = ours(profile, window, method)
            windows[method] += drifted
            features[method] += flagged
            state[method] = advance(state[method], drifted, CONSECUTIVE)
    n = sizes.fpr_windows
    return {m: {"windowRate": windows[m] / n, "featureRate": features[m] / (n * sizes.features),
                "windowsFlagged": windows[m], "declarations": state[m].declarations, "windows": n}
            for m in METHODS}


def one_trial(profile: Mapping[str, Any], law: Law, sizes: Sizes, shift: float,
              rng: np.random.Generator) -> dict[str, Any]:
    """Per method: shifted windows until declared (None: not within the horizon), declared before the shift,
    and how many shifted windows it flagged among those it saw."""
    shifted = shifted_features(sizes)
    state = {m: TrackerState() for m in METHODS}
    out: dict[str, dict[str, Any]] = {m: {"delay": None, "falseAlarm": False, "flagged": 0, "seen": 0}
                                      for m in METHODS}
    for k in range(sizes.pre + sizes.horizon):
        after = k - sizes.pre + 1  # the how-many-th shifted window; <= 0 before the shift
        pending = [m for m in METHODS if out[m]["delay"] is None]
        if not pending:
            break
        window = law.draw(sizes.rows, rng, shift if after > 0 else 0.0, shifted)
        for method in pending:
            drifted = ours(profile, window, method)[0]
            state[method] = advance(state[method], drifted, CONSECUTIVE)
            if after <= 0:
                out[method]["falseAlarm"] |= state[method].declared
                continue
            out[method]["flagged"] += drifted
            out[method]["seen"] += 1
            if state[method].event == "declared":
                out[method]["delay"] = after
    return out


def delays(profile: Mapping[str, Any], law: Law, sizes: Sizes, rng: np.random.Generator) -> dict[str, Any]:
    """Per shift and method: trials detected, delays, the share of shifted windows flagged."""
    out: dict[str, Any] = {}
    for shift in SHIFTS:
        trials = [one_trial(profile, law, sizes, shift, rng) for _ in range(sizes.trials)]
        out[f"{shift:g}"] = {}
        for method in METHODS:
            found = [t[method]["delay"] for t in trials if t[method]["delay"] is not None]
            seen = sum(t[method]["seen"] for t in trials)
            out[f"{shift:g}"][method] = {
                "detected": len(found), "trials": len(trials), "delays": found,
                "meanDelay": statistics.mean(found) if found else None,
                "windowFlagRate": sum(t[method]["flagged"] for t in trials) / seen if seen else None,
                "falseAlarmsBeforeShift": sum(t[method]["falseAlarm"] for t in trials)}
    return out


# --- third-party libraries -------------------------------------------------------------------------------

def venvs_dir() -> Path:
    """Where ``hack/bench.sh --thirdparty`` puts the throwaway venvs (``<dir>/<library>/bin/python``)."""
    return Path(os.environ.get(ENV_VENVS) or Path.home() / ".cache" / "tritonops" / "bench-venvs")


def _thirdparty_data(profile: Mapping[str, Any], reference: Array, window: Array, path: Path) -> None:
    features = profile["inputs"]
    if len({len(f["edges"]) for f in features}) != 1:
        raise BenchError("features with different bin counts: the binned third-party input needs equal ones")
    np.savez(path, sample=np.stack([f["sample"] for f in features], axis=1), reference=reference,
             edges=np.asarray([f["edges"] for f in features]), window=window)


def _run_library(library: str, data: Path, repeats: int) -> dict[str, Any]:
    root = venvs_dir()
    python = root / library / "bin" / "python"
    failed = root / f"{library}.failed"
    if failed.is_file():
        return {"absent": f"install failed: {failed.read_text().strip()[-500:]}"}
    if not python.is_file():
        return {"absent": f"not installed in {root} (hack/bench.sh --thirdparty installs it from PyPI)"}
    env = {**os.environ, "DO_NOT_TRACK": "1"}  # evidently's telemetry
    try:
        proc = subprocess.run([str(python), str(ROOT / "bench" / "thirdparty.py"), library, str(data), str(repeats)],
                              capture_output=True, text=True, timeout=600, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"absent": "timed out after 600 s"}
    if proc.returncode != 0:
        return {"absent": f"failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"}
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    install = root / f"{library}.install-seconds"
    result["installSeconds"] = float(install.read_text()) if install.is_file() else None
    return result


def thirdparty(profile: Mapping[str, Any], reference: Array, window: Array, sizes: Sizes,
               smoke: bool) -> dict[str, Any]:
    """Each library's timings on the same data, or why there are none."""
    if smoke:
        return {lib: {"absent": "skipped in a smoke run"} for lib in LIBRARIES}
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        data = Path(tmp) / "data.npz"
        _thirdparty_data(profile, reference, window, data)
        return {lib: _run_library(lib, data, sizes.thirdparty_repeats) for lib in LIBRARIES}


# --- report ----------------------------------------------------------------------------------------------

def report_cost(costs: dict[str, Any], libraries: dict[str, Any], sizes: Sizes) -> None:
    rows = [[m, 1000 * c["oursSeconds"], 1000 * c["scipySeconds"], c["ratio"], c["baseline"]]
            for m, c in costs.items()]
    emit(table(f"cost per window of {sizes.rows} rows x {sizes.features} features (median of {sizes.repeats})",
               ["method", "ours ms", "scipy ms", "ours/scipy", "baseline"], rows))
    rows = []
    for lib, result in libraries.items():
        if "absent" in result:
            rows.append([lib, "-", "-", None, None, None, result["absent"][:100]])
            continue
        for m, r in result["methods"].items():
            mine = costs[m]["oursSeconds"]
            theirs = r.get("medianSeconds")
            rows.append([lib, result["version"], m, None if theirs is None else 1000 * theirs, ratio(mine, theirs),
                         r.get("flaggedFeatures"), r.get("notOffered", "")])
    emit(table("third-party libraries on the same window (subprocess; flagged = features at p < 0.05, uncorrected)",
               ["library", "version", "method", "ms", "ours/them", "flagged", "note"], rows))


def report_accuracy(fpr: dict[str, Any], delay: dict[str, Any], sizes: Sizes) -> None:
    rows = [[m, DEFAULT_THRESHOLDS[m], f"{f['windowsFlagged']}/{f['windows']}", f["windowRate"], f["featureRate"],
             f["declarations"]] for m, f in fpr.items()]
    emit(table(f"no drift: {sizes.fpr_windows} windows (threshold: psi/js score, ks/chi2 alpha after Holm)",
               ["method", "threshold", "windows flagged", "window FPR", "feature FPR",
                f"declared (consecutive {CONSECUTIVE})"], rows))
    headers = ["method", *(f"{s}sd: detected, mean delay, flagged" for s in delay)]
    rows = []
    for method in METHODS:
        cells = [method]
        for per in delay.values():
            d = per[method]
            mean = "-" if d["meanDelay"] is None else f"{d['meanDelay']:.1f}"
            flag = "-" if d["windowFlagRate"] is None else f"{100 * d['windowFlagRate']:.0f}%"
            cells.append(f"{d['detected']}/{d['trials']}, {mean}, {flag}")
        rows.append(cells)
    emit(table(f"mean shift of the first {shifted_features(sizes)} features: shifted windows until declared "
               f"(consecutiveWindows={CONSECUTIVE}; not declared within {sizes.horizon}: not detected)", headers, rows))


def main(argv: Sequence[str] | None = None) -> int:
    run = parse_args(NAME, __doc__.splitlines()[0] if __doc__ else NAME, argv)
    sizes = SMOKE if run.smoke else DEFAULT
    rng = np.random.default_rng(20240601)
    law = Law.random(sizes.features, rng)
    reference = law.draw(sizes.ref_rows, rng)
    t0 = time.perf_counter()
    profile = build_profile(reference, input_names=["x"])
    profile_s = time.perf_counter() - t0
    window = law.draw(sizes.rows, rng)
    costs = cost(profile, window, sizes.repeats)
    libraries = thirdparty(profile, reference, window, sizes, run.smoke)
    fpr = false_positives(profile, law, sizes, rng)
    delay = delays(profile, law, sizes, rng)
    report_cost(costs, libraries, sizes)
    report_accuracy(fpr, delay, sizes)
    params = {**sizes.__dict__, "thresholds": DEFAULT_THRESHOLDS, "correction": "holm",
              "consecutiveWindows": CONSECUTIVE, "shifts": list(SHIFTS), "shiftedFeatures": shifted_features(sizes)}
    results = {"profileBuildSeconds": profile_s, "cost": costs, "thirdParty": libraries, "falsePositives": fpr,
               "detectionDelay": delay}
    emit(f"wrote {write_result(run, params, results)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
