"""A real PostgreSQL server for tests, in a temporary folder on a loopback port (Debian's `postgresql`
package: `apt-get install postgresql`, which .ci/run does where it is missing). Started by the tests that
need one and stopped after them; skipped where the server's programs are not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rnnexp.browser import free_port


def server_programs() -> Path | None:
    """The folder of initdb and pg_ctl (the newest installed version), or None."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields the URL of an empty database `optuna` on a server of its own; the folder is removed after."""
    programs = server_programs()
    assert programs is not None, "PostgreSQL's server programs are not installed"
    # The server refuses to run as root: there it runs as the package's `postgres` user, in a folder it owns.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="rnnexp-postgres-"))
    if as_user:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=120)

    try:
        run(str(programs / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(programs / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        try:
            run(str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
            yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
        finally:
            run(str(programs / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
