"""A throwaway PostgreSQL cluster for the queue's tests: initdb in a temporary folder, a Unix
socket only (no TCP port at all), run as an unprivileged user when we are root, stopped at the
end (``pg_ctl stop -m immediate``, and again at exit if the fixture never got to it)."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["Cluster", "find_pg_bin"]


def find_pg_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (the newest), else None."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).resolve().parent == Path(pg_ctl).resolve().parent:
        return Path(initdb).resolve().parent

    def version(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(found[-1]).parent if found else None


def _service_user() -> str | None:
    """Who runs the server when we are root (PostgreSQL refuses root): Debian's ``postgres``,
    else ``nobody``; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and neither 'postgres' nor 'nobody' exists")


class Cluster:
    """One cluster in a temporary folder, listening on a Unix socket in that folder only."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.user = _service_user()
        self.root = Path(tempfile.mkdtemp(prefix="vlens-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 5432  # only names the socket file: listen_addresses is empty
        self._started = False

    @property
    def url(self) -> str:
        """A libpq URL to the ``postgres`` database over the socket."""
        return f"postgresql:///postgres?host={self.socket_dir}&port={self.port}&user=vlens"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr[-2000:]}\n{log}")

    def start(self) -> None:
        """initdb, then start the server and wait for it (pg_ctl -w)."""
        self.socket_dir.mkdir()
        if self.user is not None:
            info = pwd.getpwnam(self.user)
            os.chmod(self.root, 0o755)
            for path in (self.root, self.socket_dir):
                os.chown(path, info.pw_uid, info.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "vlens",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        atexit.register(self.stop)
        options = (
            f"-c listen_addresses='' -k {self.socket_dir} -p {self.port} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self._started = True

    def stop(self) -> None:
        """Stop the server (immediate: it is thrown away) and remove the folder."""
        if self._started:
            self._started = False
            with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
