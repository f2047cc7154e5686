"""The ml-100k source chain, every branch driven by fake downloads and a fake pip (no network)."""

from __future__ import annotations

import hashlib
import io
import re
import subprocess
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from movielab.world.data import sources
from movielab.world.data.errors import ChecksumMismatch, DataError, DataFormatError, DataUnavailable
from movielab.world.data.sources import (
    GROUPLENS_DIR,
    RECBOLE_DIR,
    default_cache_dir,
    ensure_ml100k_cached,
    fetch_ml100k,
    http_download,
    pip_download,
)

ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n2\tGoldenEye\t1995\tAction Adventure Thriller\n"
)
USER = (
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    "1\t24\tM\ttechnician\t85711\n2\t53\tF\tother\t94043\n"
)
INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1\t1\t3\t881250949\n2\t1\t4\t891717742\n2\t2\t5\t878887116\n"
)
RECBOLE_FILES = {"ml-100k.inter": INTER.encode(), "ml-100k.item": ITEM.encode(), "ml-100k.user": USER.encode()}
NATIVE_FILES = {
    "u.item": b"1|Toy Story (1995)|01-Jan-1995||x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
    "u.user": b"1|24|M|technician|85711\n",
    "u.data": b"1\t1\t5\t881250949\n",
}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


class FakePip:
    """Stands in for `pip download`: writes a wheel built here, or fails like pip without an index."""

    def __init__(self, files: dict[str, bytes] | None = None, error: Exception | None = None) -> None:
        self.files, self.error, self.calls = files, error, 0

    def __call__(self, requirement: str, dest: Path, timeout: float) -> None:
        self.calls += 1
        assert requirement == "recbole==1.2.1"
        if self.error is not None:
            raise self.error
        members = {f"recbole/dataset_example/ml-100k/{n}": d for n, d in (self.files or RECBOLE_FILES).items()}
        members["recbole/__init__.py"] = b""
        (dest / "recbole-1.2.1-py3-none-any.whl").write_bytes(_zip(members))


class FakeDownload:
    """Stands in for the GroupLens download."""

    def __init__(self, body: bytes | None = None, error: Exception | None = None) -> None:
        self.body, self.error, self.calls = body, error, 0

    def __call__(self, url: str, timeout: float) -> bytes:
        self.calls += 1
        assert url == sources.GROUPLENS_URL and timeout == 5.0
        if self.error is not None:
            raise self.error
        return self.body


NO_PIP = FakePip(error=DataError("pip download recbole==1.2.1 failed with exit code 1: no index"))
UNREACHABLE = FakeDownload(error=urllib.error.URLError("Name or service not known"))


@pytest.fixture(autouse=True)
def fixture_digests(request, monkeypatch):
    """Make the fixture wheel's files the "published" ones (except for the slow test of the real wheel)."""
    if request.node.get_closest_marker("slow") is None:
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in RECBOLE_FILES.items()}
        monkeypatch.setattr(sources, "RECBOLE_SHA256", digests)


def _grouplens_zip(monkeypatch) -> bytes:
    body = _zip({f"ml-100k/{name}": data for name, data in NATIVE_FILES.items()} | {"ml-100k/README": b"x"})
    monkeypatch.setattr(sources, "GROUPLENS_MD5", hashlib.md5(body).hexdigest())
    return body


def test_a_named_folder_is_loaded_without_touching_other_sources(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, data in RECBOLE_FILES.items():
        (folder / name).write_bytes(data)
    data = fetch_ml100k(folder, cache_dir=tmp_path / "cache", download=UNREACHABLE, pip=NO_PIP)
    assert data.source == f"folder {folder}" and len(data.ratings) == 3
    assert not (tmp_path / "cache").exists()


def test_a_broken_named_folder_raises_instead_of_falling_back(tmp_path):
    (tmp_path / "ml-100k.inter").write_text("not a header\n")
    for name in ("ml-100k.item", "ml-100k.user"):
        (tmp_path / name).write_bytes(RECBOLE_FILES[name])
    pip = FakePip()
    with pytest.raises(DataFormatError, match="ml-100k.inter, line 1"):
        fetch_ml100k(tmp_path, cache_dir=tmp_path / "cache", pip=pip)
    assert pip.calls == 0


def test_wheel_is_fetched_once_then_served_from_the_cache(tmp_path):
    pip = FakePip()
    first = fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=pip)
    assert first.source == "recbole-1.2.1 wheel (downloaded)" and first.n_users == 2 and len(first.ratings) == 3
    second = fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=NO_PIP)
    assert second.source == "recbole-1.2.1 wheel (cached)" and pip.calls == 1
    assert np.array_equal(first.ratings.rating, second.ratings.rating)
    assert sorted(p.name for p in tmp_path.iterdir()) == [RECBOLE_DIR]  # no temporary folder left behind


def test_a_corrupt_cache_is_fetched_again(tmp_path):
    fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=FakePip())
    (tmp_path / RECBOLE_DIR / "ml-100k.inter").write_bytes(INTER.encode().replace(b"\t4\t", b"\t1\t"))
    pip = FakePip()
    data = fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=pip)
    assert pip.calls == 1 and data.source == "recbole-1.2.1 wheel (downloaded)"
    assert (tmp_path / RECBOLE_DIR / "ml-100k.inter").read_bytes() == RECBOLE_FILES["ml-100k.inter"]


def test_unreachable_grouplens_falls_back_to_the_wheel(tmp_path):
    download = FakeDownload(error=urllib.error.URLError("Name or service not known"))
    data = fetch_ml100k(cache_dir=tmp_path, download=download, pip=FakePip())
    assert download.calls == 1 and data.source == "recbole-1.2.1 wheel (downloaded)"


def test_grouplens_zip_is_verified_cached_and_reverified(tmp_path, monkeypatch):
    download = FakeDownload(_grouplens_zip(monkeypatch))
    data = fetch_ml100k(cache_dir=tmp_path, download=download, pip=NO_PIP)
    assert data.source == "GroupLens ml-100k.zip (downloaded)" and data.movies.title == ["Toy Story"]
    assert sorted(p.name for p in (tmp_path / GROUPLENS_DIR).iterdir()) == ["SHA256SUMS", "u.data", "u.item", "u.user"]
    assert fetch_ml100k(cache_dir=tmp_path, download=download, pip=NO_PIP).source == "GroupLens ml-100k.zip (cached)"
    (tmp_path / GROUPLENS_DIR / "u.data").write_bytes(b"1\t1\t1\t881250949\n")
    assert fetch_ml100k(cache_dir=tmp_path, download=download, pip=NO_PIP).ratings.rating.tolist() == [5.0]
    assert download.calls == 2


def test_a_grouplens_checksum_mismatch_is_recorded_and_the_wheel_used(tmp_path, monkeypatch):
    body = _grouplens_zip(monkeypatch)
    monkeypatch.setattr(sources, "GROUPLENS_MD5", "0" * 32)
    data = fetch_ml100k(cache_dir=tmp_path, download=FakeDownload(body), pip=FakePip())
    assert data.source == "recbole-1.2.1 wheel (downloaded)"
    assert not (tmp_path / GROUPLENS_DIR).exists()


def test_a_wheel_checksum_mismatch_leaves_no_cache_and_names_the_digests(tmp_path):
    tampered = dict(RECBOLE_FILES, **{"ml-100k.user": USER.replace("other", "writer").encode()})
    with pytest.raises(DataUnavailable) as caught:
        fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=FakePip(tampered))
    message = str(caught.value)
    assert "ChecksumMismatch" in message and "ml-100k.user" in message
    assert sources.RECBOLE_SHA256["ml-100k.user"] in message
    assert hashlib.sha256(tampered["ml-100k.user"]).hexdigest() in message
    assert list(tmp_path.iterdir()) == []


def test_everything_failing_raises_data_unavailable_naming_every_source(tmp_path):
    with pytest.raises(DataUnavailable) as caught:
        fetch_ml100k(cache_dir=tmp_path, download=UNREACHABLE, pip=NO_PIP)
    sources_tried = [source for source, _ in caught.value.attempts]
    assert sources_tried == [
        f"cache {tmp_path / GROUPLENS_DIR}",
        f"cache {tmp_path / RECBOLE_DIR}",
        f"GroupLens {sources.GROUPLENS_URL}",
        "PyPI wheel recbole==1.2.1",
    ]
    message = str(caught.value)
    assert "not cached" in message and "Name or service not known" in message and "no index" in message


def test_allow_download_false_skips_grouplens_and_says_so(tmp_path):
    download = FakeDownload(error=AssertionError("must not be called"))
    with pytest.raises(DataUnavailable, match="skipped: allow_download=False"):
        fetch_ml100k(cache_dir=tmp_path, allow_download=False, download=download, pip=NO_PIP)
    assert download.calls == 0


def test_an_interrupted_install_leaves_no_half_cache(tmp_path, monkeypatch):
    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(sources.os, "replace", crash)
    with pytest.raises(DataUnavailable, match="disk full"):
        fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=FakePip())
    assert list(tmp_path.iterdir()) == []


def test_ensure_ml100k_cached_returns_the_verified_folder(tmp_path):
    folder = ensure_ml100k_cached(tmp_path, allow_download=False, pip=FakePip())
    assert folder == tmp_path / RECBOLE_DIR
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == RECBOLE_FILES


def test_default_cache_dir_is_read_from_the_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("MOVIELAB_CACHE", str(tmp_path / "a"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("MOVIELAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "movielab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "movielab"


def test_default_cache_is_used_when_no_cache_dir_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MOVIELAB_CACHE", str(tmp_path))
    assert fetch_ml100k(allow_download=False, pip=FakePip()).n_users == 2
    assert (tmp_path / RECBOLE_DIR).is_dir()


def test_http_download_reads_a_url(tmp_path):
    (tmp_path / "f.zip").write_bytes(b"zip bytes")
    assert http_download((tmp_path / "f.zip").as_uri(), 1.0) == b"zip bytes"


def test_pip_download_reports_failures_and_timeouts(monkeypatch, tmp_path):
    seen = {}

    def failing(cmd, **kwargs):
        seen["cmd"], seen["timeout"] = cmd, kwargs["timeout"]
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: retrying\nERROR: No matching distribution\n")

    monkeypatch.setattr(sources.subprocess, "run", failing)
    with pytest.raises(DataError, match="failed with exit code 1: .*No matching distribution"):
        pip_download("recbole==1.2.1", tmp_path, 120.0)
    assert (
        seen["cmd"][1:]
        == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "recbole==1.2.1", "-d", str(tmp_path)]
        and seen["timeout"] == 120.0
    )

    def slow(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"])

    monkeypatch.setattr(sources.subprocess, "run", slow)
    with pytest.raises(DataError, match="took longer than 120 s"):
        pip_download("recbole==1.2.1", tmp_path, 120.0)


def test_checksum_mismatch_names_file_and_digests():
    error = ChecksumMismatch("x/ml-100k.inter", "aa", "bb")
    assert str(error) == "x/ml-100k.inter: sha256 is bb, expected aa"


@pytest.mark.slow
def test_real_chain_fetches_the_recbole_wheel_from_pypi(tmp_path):
    try:
        data = fetch_ml100k(cache_dir=tmp_path, allow_download=False)
    except DataUnavailable as exc:
        if not re.search(r"pip download \S+ (failed|took longer)", str(exc)):
            raise
        pytest.skip(f"pip cannot reach the package index here: {exc}")
    assert (data.n_users, len(data.movies), len(data.ratings)) == (943, 1682, 100_000)
    assert data.ratings.rating.astype(np.float64).mean() == pytest.approx(3.52986, abs=1e-6)
    assert data.source == "recbole-1.2.1 wheel (downloaded)"
    assert fetch_ml100k(cache_dir=tmp_path, allow_download=False, pip=NO_PIP).source == "recbole-1.2.1 wheel (cached)"


def test_a_cache_without_its_manifest_is_fetched_again(tmp_path, monkeypatch):
    download = FakeDownload(_grouplens_zip(monkeypatch))
    fetch_ml100k(cache_dir=tmp_path, download=download, pip=NO_PIP)
    (tmp_path / GROUPLENS_DIR / "SHA256SUMS").write_text("garbage\n")
    assert (
        fetch_ml100k(cache_dir=tmp_path, download=download, pip=NO_PIP).source == "GroupLens ml-100k.zip (downloaded)"
    )
    assert download.calls == 2
