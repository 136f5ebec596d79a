"""The model store the retraining Job writes to: version numbering, no overwriting, conditional S3 writes.

Two real S3 servers: the shared one (versitygw ``--nometa``, from conftest) and one started here with its
metadata store, the only mode in which versitygw enforces ``If-None-Match: *`` on PUT.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3 import S3Server, running_s3
from tritonops_runtime.retrain.config import RetrainError, VersionExistsError
from tritonops_runtime.retrain.store import LocalStore, S3Store, _rename_noreplace, next_version, open_store


def _files(tmp: Path, **content: bytes) -> list[Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in content.items():
        (tmp / name.replace("_", ".")).write_bytes(data)
        out.append(tmp / name.replace("_", "."))
    return out


@pytest.fixture(scope="module")
def s3_meta(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """versitygw with its (xattr) metadata store, so that conditional writes are evaluated."""
    root = tmp_path_factory.mktemp("s3-meta")
    with running_s3(root, metadata=True) as server:
        (root / "models").mkdir()
        yield server


def test_conditional_put_is_refused_when_the_key_exists(tmp_path: Path, s3_meta: S3Server) -> None:
    store = S3Store(f"s3://models/{tmp_path.name}", s3_meta.env())
    first, second = _files(tmp_path, a=b"first"), _files(tmp_path / "b", a=b"second")
    store.put_new(f"{tmp_path.name}/1/a", first[0])
    with pytest.raises(VersionExistsError, match="HTTP 412 \\(PreconditionFailed\\) on a conditional PUT"):
        store.put_new(f"{tmp_path.name}/1/a", second[0])
    assert (s3_meta.root / "models" / tmp_path.name / "1" / "a").read_bytes() == b"first"


def test_nometa_server_ignores_if_none_match(tmp_path: Path, s3_server: S3Server) -> None:
    """Documents the race left on servers that ignore the condition (see store.py)."""
    (s3_server.root / "models").mkdir(exist_ok=True)
    store = S3Store(f"s3://models/{tmp_path.name}", s3_server.env())
    store.put_new(f"{tmp_path.name}/1/a", _files(tmp_path, a=b"first")[0])
    store.put_new(f"{tmp_path.name}/1/a", _files(tmp_path / "b", a=b"second")[0])
    assert (s3_server.root / "models" / tmp_path.name / "1" / "a").read_bytes() == b"second"


class _ListedTooEarly(S3Store):
    """A run whose listing happened before another run's objects landed (the race a conditional PUT closes)."""

    def exists(self, version: str) -> bool:
        return False


def test_losing_the_race_writes_nothing(tmp_path: Path, s3_meta: S3Server) -> None:
    theirs = s3_meta.root / "models" / tmp_path.name / "3" / "model.pt"
    theirs.parent.mkdir(parents=True)
    S3Store(f"s3://models/{tmp_path.name}", s3_meta.env()).put_new(
        f"{tmp_path.name}/3/model.pt", _files(tmp_path / "theirs", model_pt=b"their model")[0])
    ours = _files(tmp_path / "ours", model_pt=b"our model", manifest_json=b"{}")
    with pytest.raises(VersionExistsError):
        _ListedTooEarly(f"s3://models/{tmp_path.name}", s3_meta.env()).publish("3", ours)
    assert sorted(os.listdir(theirs.parent)) == ["model.pt"] and theirs.read_bytes() == b"their model"


def test_a_later_conflict_removes_what_was_written(tmp_path: Path, s3_meta: S3Server) -> None:
    other = S3Store(f"s3://models/{tmp_path.name}", s3_meta.env())
    other.put_new(f"{tmp_path.name}/4/manifest.json", _files(tmp_path / "theirs", manifest_json=b"theirs")[0])
    ours = _files(tmp_path / "ours", model_pt=b"m", reference_profile_json=b"p", manifest_json=b"ours")
    with pytest.raises(VersionExistsError):
        _ListedTooEarly(f"s3://models/{tmp_path.name}", s3_meta.env()).publish("4", ours)
    version_dir = s3_meta.root / "models" / tmp_path.name / "4"
    assert sorted(p.name for p in version_dir.iterdir() if p.is_file()) == ["manifest.json"]
    assert (version_dir / "manifest.json").read_bytes() == b"theirs"


def test_s3_versions_exists_and_publish(tmp_path: Path, s3_server: S3Server) -> None:
    prefix = s3_server.root / "models" / tmp_path.name
    for name in ("1/model.pt", "5/model.pt", "7-old/model.pt", "notes.txt"):
        (prefix / name).parent.mkdir(parents=True, exist_ok=True)
        (prefix / name).write_bytes(b"x")
    store = S3Store(f"s3://models/{tmp_path.name}/", s3_server.env())
    assert sorted(store.versions()) == [1, 5] and next_version(store) == "6"
    assert next_version(store, "9") == "10" and next_version(store, "") == "6"  # the serving version counts
    assert store.exists("5") and not store.exists("6") and not store.exists("7")
    with pytest.raises(VersionExistsError, match=f"version 5 already exists at s3://models/{tmp_path.name}/5/"):
        store.publish("5", _files(tmp_path, model_pt=b"new"))
    assert (prefix / "5" / "model.pt").read_bytes() == b"x"
    store.publish("6", _files(tmp_path, model_pt=b"six", manifest_json=b"{}"))
    assert (prefix / "6" / "model.pt").read_bytes() == b"six" and next_version(store) == "7"


def test_s3_listing_pages(tmp_path: Path, s3_server: S3Server) -> None:
    prefix = s3_server.root / "models" / tmp_path.name
    for n in range(1, 1003):  # more than one page of 1000 common prefixes
        (prefix / str(n)).mkdir(parents=True)
        (prefix / str(n) / "model.pt").write_bytes(b"")
    assert next_version(S3Store(f"s3://models/{tmp_path.name}", s3_server.env())) == "1003"


def test_s3_errors_are_one_line(tmp_path: Path, s3_server: S3Server) -> None:
    bad = S3Store("s3://models/x", s3_server.env(AWS_SECRET_ACCESS_KEY="wrong-secret-value"))
    with pytest.raises(RetrainError, match="access denied: HTTP 403 \\(SignatureDoesNotMatch\\)") as err:
        bad.versions()
    assert "wrong-secret-value" not in str(err.value)
    with pytest.raises(RetrainError, match="HTTP 404 \\(NoSuchBucket\\)"):
        S3Store("s3://no-such-bucket/x", s3_server.env()).versions()


def test_local_store_renames_complete_versions_into_place(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_store(f"file://{root}", tmp_path)
    assert isinstance(store, LocalStore) and store.versions() == [] and next_version(store) == "1"
    store.publish("1", _files(tmp_path / "stage", model_pt=b"one", manifest_json=b"{}"))
    assert (root / "1" / "model.pt").read_bytes() == b"one"
    assert oct((root / "1").stat().st_mode & 0o777) == "0o755"
    assert oct((root / "1" / "model.pt").stat().st_mode & 0o777) == "0o644"
    with pytest.raises(VersionExistsError, match="version 1 already exists"):
        store.publish("1", _files(tmp_path / "stage2", model_pt=b"other"))
    (root / "2").mkdir()  # even an empty directory is never replaced
    with pytest.raises(VersionExistsError):
        store.publish("2", _files(tmp_path / "stage2", model_pt=b"other"))
    assert (root / "1" / "model.pt").read_bytes() == b"one" and os.listdir(root / "2") == []
    assert sorted(os.listdir(root)) == ["1", "2"]  # no .partial directory left behind
    assert next_version(store) == "3"


def test_rename_never_replaces(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()  # empty: rename(2) would replace it; renameat2(RENAME_NOREPLACE) refuses
    with pytest.raises(VersionExistsError):
        _rename_noreplace(tmp_path / "src", tmp_path / "dst")
    _rename_noreplace(tmp_path / "src", tmp_path / "new")
    assert (tmp_path / "new").is_dir() and not (tmp_path / "src").exists()


def test_pvc_store(tmp_path: Path) -> None:
    store = open_store("pvc://claim/models/clf", tmp_path / "pvc")
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "pvc" / "models" / "clf").resolve()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "pvc").mkdir()
    (tmp_path / "pvc" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Exception, match="symbolic link"):
        open_store("pvc://claim/link/clf", tmp_path / "pvc")


@pytest.mark.parametrize(("uri", "message"), [
    ("gs://bucket/models", "cannot write the new version to gs://"),
    ("https://host/models", "cannot write the new version to https://"),
    ("ftp://host/models", "unsupported --output-uri"),
    ("s3://key:pa55w0rd@bucket/models", "credentials in the output URI"),
    ("s3:///models", "bad S3 URI"),
])
def test_refused_outputs(uri: str, message: str) -> None:
    with pytest.raises(RetrainError, match=message) as err:
        open_store(uri, Path("/nonexistent"), {})
    assert "pa55w0rd" not in str(err.value)
