"""Where data files live, and fetching them: every URL and checksum the project uses is here."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnexp.errors import DataError

DATA_DIR_ENV = "RNNEXP_DATA_DIR"


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str
    filename: str  # the name it is stored (or placed by hand) under in the data directory


REMOTE_FILES = {
    "tinyshakespeare": RemoteFile(
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        filename="tinyshakespeare.txt",
    ),
}


def resolve_data_dir(configured: str | None = None) -> Path:
    """`configured` (the `data_dir` setting) if given, else $RNNEXP_DATA_DIR, else a user cache folder."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "rnnexp"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(name: str, data_dir: Path) -> Path:
    """The verified local copy of REMOTE_FILES[name], downloaded first if it is not there yet."""
    remote = REMOTE_FILES[name]
    path = data_dir / remote.filename
    if not path.exists():
        _download(remote, path)
    actual = sha256_of(path)
    if actual != remote.sha256:
        raise DataError(
            f"{path} has SHA-256 {actual}, expected {remote.sha256}: delete it to download it again"
        )
    return path


def _download(remote: RemoteFile, path: Path) -> None:
    """Stream to a temporary file beside `path` and rename it only once complete and verified,
    so an interrupted download never leaves a partial file under the final name."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(remote.url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
                task = bar.add_task(f"downloading {remote.filename}", total=total)
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.advance(task, len(chunk))
    except (urllib.error.URLError, OSError) as e:
        partial.unlink(missing_ok=True)
        reason = getattr(e, "reason", e)
        raise DataError(
            f"could not download {remote.url} ({reason}); if you are offline, download it by hand "
            f"and place it at {path} (or point ${DATA_DIR_ENV} at a folder that has {remote.filename})"
        ) from None
    if digest.hexdigest() != remote.sha256:
        partial.unlink(missing_ok=True)
        raise DataError(f"download of {remote.url} has SHA-256 {digest.hexdigest()}, expected {remote.sha256}")
    os.replace(partial, path)
