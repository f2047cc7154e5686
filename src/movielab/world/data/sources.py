"""Where ml-100k comes from: a folder the user names, the local cache, GroupLens, or the recbole wheel on PyPI.

The chain stops at the first source that works. Everything that enters the cache is verified first
(GroupLens' published MD5 of the zip, or the SHA-256 of RecBole's three files), is written to a
temporary folder that is renamed into place, and is verified again (SHA-256) whenever it is read.
`allow_download=False` skips only GroupLens: the wheel comes through pip and the package index, which
stays reachable where GroupLens is not.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from movielab.world.data.errors import ChecksumMismatch, DataError, DataUnavailable
from movielab.world.data.movielens import load_movielens
from movielab.world.data.types import MovieLensData

logger = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published by GroupLens next to the zip
GROUPLENS_FILES = ("u.data", "u.item", "u.user")
GROUPLENS_DIR = "ml-100k-grouplens"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_MEMBER_DIR = "recbole/dataset_example/ml-100k/"
RECBOLE_DIR = "ml-100k-recbole"
# Digests of the files the recbole 1.2.1 wheel ships; tests monkeypatch this dict to use fixture wheels.
RECBOLE_SHA256: dict[str, str] = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
MANIFEST = "SHA256SUMS"
PIP_TIMEOUT = 120.0

Download = Callable[[str, float], bytes]  # (url, timeout) -> body
PipDownload = Callable[[str, Path, float], None]  # (requirement, destination folder, timeout)
# What a failing source may raise; anything else is a bug and propagates.
_SOURCE_ERRORS = (
    DataError,
    OSError,
    ValueError,
    zipfile.BadZipFile,
    subprocess.SubprocessError,
    http.client.HTTPException,
)


def default_cache_dir() -> Path:
    """Return the cache folder: $MOVIELAB_CACHE, else $XDG_CACHE_HOME/movielab, else ~/.cache/movielab."""
    if os.environ.get("MOVIELAB_CACHE"):
        return Path(os.environ["MOVIELAB_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "movielab"
    return Path.home() / ".cache" / "movielab"


def http_download(url: str, timeout: float) -> bytes:
    """Return the body of `url` (raises OSError when unreachable or slower than `timeout` per read)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
        return response.read()


def pip_download(requirement: str, dest: Path, timeout: float) -> None:
    """Download the wheel of `requirement` (no dependencies) into `dest` with this interpreter's pip."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download {requirement} took longer than {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise DataError(f"pip download {requirement} failed with exit code {proc.returncode}: {tail}")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check(name: str, data: bytes, expected: str) -> None:
    actual = _sha256(data)
    if actual != expected:
        raise ChecksumMismatch(name, expected, actual)


def _read_manifest(folder: Path) -> dict[str, str]:
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{path} is missing, so the cached files cannot be verified")
    digests = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.strip().partition("  ")
        if name:
            digests[name] = digest
    missing = [name for name in GROUPLENS_FILES if name not in digests]
    if missing:
        raise DataError(f"{path} lists no digest for {', '.join(missing)}")
    return digests


def _verify_folder(folder: Path, digests: dict[str, str]) -> None:
    """Raise unless every file of `digests` is in `folder` with that SHA-256."""
    for name, expected in digests.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing from the cache")
        _check(str(path), path.read_bytes(), expected)


def _install(cache: Path, name: str, files: dict[str, bytes], manifest: bool) -> Path:
    """Write `files` into cache/name atomically: a temporary folder renamed into place."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any other cache folder
    try:
        for filename, data in files.items():
            (tmp / filename).write_bytes(data)
        if manifest:
            (tmp / MANIFEST).write_text("".join(f"{_sha256(data)}  {fn}\n" for fn, data in files.items()))
        target = cache / name
        if target.exists():  # a stale or corrupt copy; os.replace cannot overwrite a non-empty folder
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fetch_grouplens(cache: Path, timeout: float, download: Download) -> Path:
    body = download(GROUPLENS_URL, timeout)
    actual = hashlib.md5(body).hexdigest()  # noqa: S324 - GroupLens publishes an MD5
    if actual != GROUPLENS_MD5:
        raise ChecksumMismatch(GROUPLENS_URL, GROUPLENS_MD5, actual, algorithm="md5")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        files = {name: _member(archive, f"ml-100k/{name}", GROUPLENS_URL) for name in GROUPLENS_FILES}
    return _install(cache, GROUPLENS_DIR, files, manifest=True)


def _fetch_recbole(cache: Path, pip: PipDownload, pip_timeout: float) -> Path:
    with tempfile.TemporaryDirectory(prefix="movielab-pip-") as tmp:
        pip(RECBOLE_REQUIREMENT, Path(tmp), pip_timeout)
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise DataError(f"pip download {RECBOLE_REQUIREMENT} left no recbole wheel in {tmp}")
        with zipfile.ZipFile(wheels[0]) as archive:
            files = {name: _member(archive, RECBOLE_MEMBER_DIR + name, wheels[0].name) for name in RECBOLE_SHA256}
        for name, data in files.items():
            _check(f"{wheels[0].name}:{RECBOLE_MEMBER_DIR}{name}", data, RECBOLE_SHA256[name])
    return _install(cache, RECBOLE_DIR, files, manifest=False)


def _member(archive: zipfile.ZipFile, member: str, origin: str) -> bytes:
    try:
        return archive.read(member)
    except KeyError:
        raise DataError(f"{origin} has no member {member}") from None


def _ensure(
    cache: Path, allow_download: bool, timeout: float, download: Download, pip: PipDownload, pip_timeout: float
) -> tuple[Path, str]:
    """Return (folder of verified ml-100k files in the cache, source label), fetching when needed."""
    attempts: list[tuple[str, str]] = []
    cached = (("GroupLens ml-100k.zip", GROUPLENS_DIR), ("recbole-1.2.1 wheel", RECBOLE_DIR))
    for label, name in cached:
        folder = cache / name
        if not folder.is_dir():
            attempts.append((f"cache {folder}", "not cached"))
            continue
        try:
            _verify_folder(folder, _read_manifest(folder) if name == GROUPLENS_DIR else RECBOLE_SHA256)
        except (DataError, OSError) as exc:
            logger.info("cached ml-100k in %s is unusable, fetching again: %s", folder, exc)
            attempts.append((f"cache {folder}", str(exc)))
            continue
        return folder, f"{label} (cached)"
    steps: list[tuple[str, str, Callable[[], Path]]] = []
    if allow_download:
        steps.append(
            ("GroupLens ml-100k.zip", f"GroupLens {GROUPLENS_URL}", lambda: _fetch_grouplens(cache, timeout, download))
        )
    else:
        attempts.append((f"GroupLens {GROUPLENS_URL}", "skipped: allow_download=False"))
    steps.append(
        ("recbole-1.2.1 wheel", f"PyPI wheel {RECBOLE_REQUIREMENT}", lambda: _fetch_recbole(cache, pip, pip_timeout))
    )
    for label, where, step in steps:
        try:
            folder = step()
        except _SOURCE_ERRORS as exc:
            logger.info("ml-100k from %s failed: %s", where, exc)
            attempts.append((where, f"{type(exc).__name__}: {exc}"))
            continue
        return folder, f"{label} (downloaded)"
    raise DataUnavailable("ml-100k", attempts)


def ensure_ml100k_cached(
    cache_dir: Path | None = None,
    allow_download: bool = True,
    timeout: float = 5.0,
    *,
    download: Download = http_download,
    pip: PipDownload = pip_download,
    pip_timeout: float = PIP_TIMEOUT,
) -> Path:
    """Make sure verified ml-100k files are in the cache (fetching them if needed); return their folder."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder, source = _ensure(cache, allow_download, timeout, download, pip, pip_timeout)
    logger.info("ml-100k is cached in %s, from %s", folder, source)
    return folder


def fetch_ml100k(
    folder: Path | None = None,
    cache_dir: Path | None = None,
    allow_download: bool = True,
    timeout: float = 5.0,
    *,
    download: Download = http_download,
    pip: PipDownload = pip_download,
    pip_timeout: float = PIP_TIMEOUT,
) -> MovieLensData:
    """Load ml-100k from `folder` if given (no fallback), else from the cache, GroupLens or the recbole wheel."""
    if folder is not None:
        data = load_movielens("ml-100k", folder)
        logger.info("ml-100k source: %s", data.source)
        return data
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path, source = _ensure(cache, allow_download, timeout, download, pip, pip_timeout)
    logger.info("ml-100k source: %s, in %s", source, path)
    return dataclasses.replace(load_movielens("ml-100k", path), source=source)
