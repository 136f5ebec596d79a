"""pvc://<claim>/<path> stays inside the claim: no '..', no symbolic link anywhere in the path, no link opened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.runtime.support import MODEL, Env, write
from tritonops_runtime.errors import FetchError
from tritonops_runtime.localfs import open_regular

SECRET = b"outside the claim"


@pytest.fixture
def outside(env: Env) -> Path:
    """A directory next to the claim root holding a complete model (a successful escape would serve it)."""
    write(env.tmp / "outside" / "model.pt", SECRET)
    write(env.tmp / "outside" / "clf" / "model.pt", SECRET)
    (env.tmp / "pvc").mkdir(exist_ok=True)
    return env.tmp / "outside"


@pytest.mark.parametrize(("link", "target", "uri", "component"), [
    ("models", "outside", "pvc://claim/models", "models"),
    ("models", "outside", "pvc://claim/models/clf/model.pt", "models"),
    ("models", "outside", "pvc://claim/models/clf", "models"),
    ("model.pt", "outside/model.pt", "pvc://claim/model.pt", "model.pt"),
    ("sub/clf", "../../outside/clf", "pvc://claim/sub/clf/model.pt", "sub/clf"),
    ("etc", "/etc", "pvc://claim/etc", "etc"),
])
def test_link_in_the_path_refused(env: Env, outside: Path, link: str, target: str, uri: str, component: str) -> None:
    path = env.tmp / "pvc" / link
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target if target.startswith(("/", "..")) else env.tmp / target)
    reason = env.fail(uri)
    assert reason == (f"tritonops-fetch: refusing {uri}: {component} is a symbolic link (links in pvc:// paths are "
                      "not followed)")


def test_link_inside_the_claim_is_refused_too(env: Env) -> None:
    write(env.tmp / "pvc" / "models" / "v2" / "model.pt")
    (env.tmp / "pvc" / "latest").symlink_to("models/v2")
    assert "latest is a symbolic link" in env.fail("pvc://claim/latest/model.pt")
    rc, _, err = env.run("pvc://claim/models/v2/model.pt")
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL


def test_link_inside_a_copied_tree_leaving_the_claim(env: Env, outside: Path) -> None:
    write(env.tmp / "pvc" / "models" / "model.pt")
    (env.tmp / "pvc" / "models" / "labels.txt").symlink_to(outside / "model.pt")
    assert "is a symlink leaving" in env.fail("pvc://claim/models")


def test_open_regular_never_follows_a_link(tmp_path: Path) -> None:
    real = write(tmp_path / "real.pt")
    (tmp_path / "link.pt").symlink_to(real)
    with open_regular(real) as f:
        assert f.read() == MODEL
    with pytest.raises(FetchError, match=r"link\.pt is a symbolic link"):
        open_regular(tmp_path / "link.pt")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FetchError, match="fifo is not a regular file"):
        open_regular(tmp_path / "fifo")
    with pytest.raises(FetchError, match="is not a regular file"):
        open_regular(tmp_path)


def test_file_uri_through_the_users_own_link(env: Env) -> None:
    # file:// has no root to escape: a link the user names is resolved once, then opened without following.
    real = write(env.tmp / "store" / "v3" / "model.pt")
    (env.tmp / "current.pt").symlink_to(real)
    rc, _, err = env.run((env.tmp / "current.pt").as_uri())
    assert rc == 0, err
    assert (env.repo / "clf" / "1" / "model.pt").read_bytes() == MODEL
