"""The operator and runtime Dockerfiles, linted without a Docker engine: structure, then hadolint."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.chart.tools import CHART, ROOT, run, tool

DOCKERFILES = [ROOT / "operator" / "Dockerfile", ROOT / "runtime" / "Dockerfile"]
# The images run as the chart's user (podSecurityContext), a UID/GID of at least 10000 (never a node user).
UID = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurityContext"]["runAsUser"]
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-[a-z]+$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_structure(path: Path) -> None:
    assert UID >= 10000
    ins = instructions(path)
    froms = [args.split() for word, args in ins if word == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a slim final stage"
    stages = set()
    for f in froms:
        image = f[0]
        if image in stages:
            continue  # FROM an earlier stage
        assert PINNED_PYTHON.match(image), f"{image}: pin the python base by full version tag"
        assert "latest" not in image
        if len(f) == 3 and f[1].upper() == "AS":
            stages.add(f[2])
    final = ins[max(i for i, (w, _) in enumerate(ins) if w == "FROM"):]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1] == f"{UID}:{UID}", f"the final stage runs as uid:gid {UID}:{UID}"
    assert final[-1][0] in ("ENTRYPOINT", "CMD")
    assert any(w == "COPY" and "--from=build" in a for w, a in final), "the final stage copies the built venv"
    assert not any(w == "ADD" for w, _ in ins), "COPY, not ADD"
    for word, args in ins:
        if word == "RUN" and "pip install" in args:
            assert "PIP_NO_CACHE_DIR" in path.read_text() or "--no-cache-dir" in args


def test_runtime_image_installs_only_the_runtime() -> None:
    copies = [a for w, a in instructions(ROOT / "runtime" / "Dockerfile") if w == "COPY" and "--from" not in a]
    assert copies == ["runtime/ /src/runtime/"]
    assert ("ENTRYPOINT", '["tritonops-fetch"]') in instructions(ROOT / "runtime" / "Dockerfile")


def test_operator_image_installs_runtime_and_operator() -> None:
    ins = instructions(ROOT / "operator" / "Dockerfile")
    copied = " ".join(a for w, a in ins if w == "COPY")
    for source in ("runtime/", "pyproject.toml", "operator/"):
        assert source in copied
    assert ("ENTRYPOINT", '["tritonops"]') in ins


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint(path: Path) -> None:
    run([tool("hadolint"), "--failure-threshold", "info", str(path)])
