"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` in a temporary folder,
``pg_ctl start`` on a free loopback port, removed again at the end.

As root the cluster runs as the ``postgres`` user (``runuser -u postgres --``; PostgreSQL
refuses to run as root), otherwise as the current user. The binaries come from Debian's
``postgresql`` package (``/usr/lib/postgresql/VERSION/bin``) or from PATH; ``.ci/run`` installs
the package where it is missing. ``unavailable()`` says why a cluster cannot be had here.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SUPERUSER = "postgres"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: the newest Debian version, else PATH."""

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None when one can."""
    if bin_dir() is None:
        return (
            "PostgreSQL is not installed (no initdb/pg_ctl): as root, "
            "`apt-get install -y postgresql` (.ci/run does)"
        )
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root without runuser: cannot start PostgreSQL as its own user"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam(SUPERUSER)
        except KeyError:
            return f"running as root and there is no {SUPERUSER!r} user to run PostgreSQL as"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    return None


class Cluster:
    """One PostgreSQL server on 127.0.0.1:``port``; ``url(db)`` for a database on it."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        self.bin = bin_dir()
        self.as_root = os.geteuid() == 0
        # directly under the system's temp folder: pytest's own temp folders are private to
        # the user running the tests, and the server runs as another one
        self.root = Path(tempfile.mkdtemp(prefix="embedrec-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.root, SUPERUSER, SUPERUSER)
            shutil.chown(self.sockets, SUPERUSER, SUPERUSER)
        self.user = SUPERUSER if self.as_root else _current_user()
        self.port = _free_port()
        self.settings = {"listen_addresses": "127.0.0.1", **(settings or {})}
        self._run(
            "initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        self.start()

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed: {done.stdout}{done.stderr}{tail}")
        return done

    def start(self) -> None:
        options = f"-p {self.port} -k {self.sockets}"
        options += "".join(f" -c {key}={value}" for key, value in self.settings.items())
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends sessions and shuts down cleanly; ``immediate`` is like a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        command = [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]
        if self.as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "embedrec") -> str:
        """A fresh, empty database; returns its URL."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _current_user() -> str:
    import getpass

    return getpass.getuser()
