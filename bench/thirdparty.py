"""Time a third-party drift library on the data ``bench.drift_detectors`` wrote (run under that library's venv).

Usage: ``<venv>/bin/python bench/thirdparty.py {alibi-detect|evidently} DATA.npz REPEATS``; prints one JSON
object: the library's version, its import time, and per method (our names: psi, js, ks, chi2) the seconds of
each repeat on the window and the number of features it flagged (each at p < 0.05 or the library's default
threshold, no multiple-testing correction: both libraries' feature-level flags); or why a method is not
offered. Standalone on purpose (numpy and the library only): the project is not installed in these venvs.

What is timed is the work per window once the reference side is set up (a detector object, a reference
DataFrame), as a monitor would keep it between windows. The data are those of our detectors: ``sample``
(the profile's KS sample per feature, as columns), ``reference`` (the reference rows our profile was built
from), ``edges`` (the profile's bin edges per feature, for the binned chi-squared input) and ``window``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
Timed = Callable[[], int]  # one evaluation of the window; returns the number of features flagged


def binned(data: Array, edges: Array) -> Array:
    """Each column's bin index on the profile's edges (the chi-squared tests want categories)."""
    return np.stack([np.searchsorted(edges[j], data[:, j], side="left") for j in range(data.shape[1])], axis=1)


def alibi_methods(data: dict[str, Array]) -> tuple[str, dict[str, Timed | str]]:
    """KSDrift and ChiSquareDrift (Bonferroni across features, p 0.05); no PSI or JS distance detector."""
    import alibi_detect  # type: ignore[import-not-found, unused-ignore]
    from alibi_detect.cd import ChiSquareDrift, KSDrift  # type: ignore[import-not-found, unused-ignore]

    ks = KSDrift(data["sample"], p_val=0.05, correction="bonferroni")
    bins = data["edges"].shape[1] + 1
    chi2 = ChiSquareDrift(binned(data["reference"], data["edges"]), p_val=0.05, correction="bonferroni",
                          categories_per_feature=dict.fromkeys(range(data["window"].shape[1]), bins))

    def run_ks() -> int:
        return int(np.sum(ks.predict(data["window"], drift_type="feature")["data"]["is_drift"]))

    def run_chi2() -> int:
        window = binned(data["window"], data["edges"])
        return int(np.sum(chi2.predict(window, drift_type="feature")["data"]["is_drift"]))

    missing = "alibi-detect has no such univariate detector"
    return alibi_detect.__version__, {"psi": missing, "js": missing, "ks": run_ks, "chi2": run_chi2}


def evidently_methods(data: dict[str, Array]) -> tuple[str, dict[str, Timed | str]]:
    """A Report with DriftedColumnsCount per stat test (evidently's own binning, no multiple-testing
    correction); chisquare only takes categorical columns, so it gets the binned data."""
    import evidently  # type: ignore[import-not-found, unused-ignore]
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]
    from evidently import DataDefinition, Dataset, Report  # type: ignore[import-not-found, unused-ignore]
    from evidently.metrics import DriftedColumnsCount  # type: ignore[import-not-found, unused-ignore]

    columns = [f"f{j}" for j in range(data["window"].shape[1])]
    numeric, categorical = DataDefinition(numerical_columns=columns), DataDefinition(categorical_columns=columns)

    def dataset(array: Array, definition: DataDefinition) -> Any:
        return Dataset.from_pandas(pd.DataFrame(array, columns=columns), data_definition=definition)

    reference = dataset(data["reference"], numeric)
    sample = dataset(data["sample"], numeric)
    reference_binned = dataset(binned(data["reference"], data["edges"]), categorical)

    def report(method: str, ref: Any, to_data: Callable[[], Any]) -> Timed:
        def run() -> int:
            snapshot = Report([DriftedColumnsCount(method=method)]).run(to_data(), ref)
            return int(snapshot.dict()["metrics"][0]["value"]["count"])
        return run

    def window() -> Any:
        return dataset(data["window"], numeric)

    def window_binned() -> Any:
        return dataset(binned(data["window"], data["edges"]), categorical)

    return evidently.__version__, {"psi": report("psi", reference, window),
                                   "js": report("jensenshannon", reference, window),
                                   "ks": report("ks", sample, window),
                                   "chi2": report("chisquare", reference_binned, window_binned)}


def main(argv: list[str]) -> int:
    library, path, repeats = argv[0], argv[1], int(argv[2])
    with np.load(path) as npz:
        data = {key: npz[key] for key in npz.files}
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        version, methods = (alibi_methods if library == "alibi-detect" else evidently_methods)(data)
        setup = time.perf_counter() - t0
        out: dict[str, Any] = {"library": library, "version": version, "importAndSetupSeconds": setup, "methods": {}}
        for name, fn in methods.items():
            if isinstance(fn, str):
                out["methods"][name] = {"notOffered": fn}
                continue
            seconds, flagged = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                flagged = fn()
                seconds.append(time.perf_counter() - t0)
            out["methods"][name] = {"seconds": seconds, "medianSeconds": float(np.median(seconds)),
                                    "flaggedFeatures": flagged}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
