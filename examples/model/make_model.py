"""Generate the example model: a tiny MLP classifier (4 features -> 3 class probabilities).

Trained in about a second on CPU on synthetic data (fixed seed, deterministic), then written to ``OUT_DIR``:

- ``model.pt``      TorchScript (``torch.jit.script``), input ``INPUT0`` [batch, 4] FP32, output ``OUTPUT0`` [batch, 3];
- ``model.onnx``    the same model exported with ``torch.onnx.export`` (legacy TorchScript exporter, opset 17,
                    dynamic batch axis), skipped with a note if the export fails;
- ``reference_profile.json``  the training data's drift profile (``tritonops_runtime.drift.profile``: per-feature
                    quantile bins, summary statistics and KS sample of ``INPUT0[0..3]``, and the predicted
                    class mix of ``OUTPUT0``), canonical JSON whose digest the summary reports;
- ``sample.json``   a few inputs and the outputs the torch model gives for them.

Usage: ``python examples/model/make_model.py OUT_DIR``. No binaries are committed; tests generate into tmp.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

try:
    from tritonops_runtime.drift.profile import build_profile, dump_profile
except ImportError:  # run from a checkout without the runtime package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "runtime"))
    from tritonops_runtime.drift.profile import build_profile, dump_profile

FEATURES, CLASSES, SEED = 4, 3, 1234
INPUT_NAME, OUTPUT_NAME = "INPUT0", "OUTPUT0"


class Classifier(nn.Module):
    """Two hidden layers, softmax output."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                                 nn.Linear(16, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def synthetic_data(n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Three Gaussian blobs in 4-D; label = blob index."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 0.0, -1.0], [-2.0, 1.0, 2.0, 1.0]])
    labels = rng.integers(0, CLASSES, size=n)
    x = centers[labels] + rng.normal(0.0, 0.8, size=(n, FEATURES))
    return x.astype(np.float32), labels.astype(np.int64)


def train(x: np.ndarray, y: np.ndarray, epochs: int = 60) -> Classifier:
    """Full-batch Adam on the cross entropy of the logits (deterministic)."""
    torch.manual_seed(SEED)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model.net(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()


def profile(x: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """The drift profile of the training inputs and of the predicted class mix (argmax of the probabilities)."""
    return build_profile(x, probs, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])


def export_onnx(model: nn.Module, path: Path) -> str:
    """Export to ONNX; returns '' on success or the reason it failed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(model, (torch.zeros(2, FEATURES),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=17, dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    except Exception as err:  # reported, the TorchScript model is still usable
        return f"{type(err).__name__}: {err}"
    return ""


def make(out_dir: Path) -> dict[str, Any]:
    """Train and write every artifact into ``out_dir``; returns a summary (paths, accuracy)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    x, y = synthetic_data(2000)
    model = train(x, y)
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy()
    accuracy = float((probs.argmax(axis=1) == y).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; Triton still loads it
        torch.jit.script(model).save(str(out_dir / "model.pt"))
    onnx_error = export_onnx(model, out_dir / "model.onnx")
    profile_digest = dump_profile(profile(x, probs), out_dir / "reference_profile.json")
    sample = x[:8]
    (out_dir / "sample.json").write_text(json.dumps({"inputs": sample.tolist(), "outputs": probs[:8].tolist()}) + "\n")
    return {"dir": str(out_dir), "accuracy": accuracy, "torchscript": str(out_dir / "model.pt"),
            "onnx": "" if onnx_error else str(out_dir / "model.onnx"), "onnxError": onnx_error,
            "referenceProfile": str(out_dir / "reference_profile.json"), "profileDigest": profile_digest}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``make_model.py OUT_DIR``; prints the summary as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: make_model.py OUT_DIR", file=sys.stderr)
        return 2
    print(json.dumps(make(Path(args[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
