"""A throwaway Postgres for the tests when none answers at the configured URL.

The store tests need a real Postgres. When `CANARY_TEST_DATABASE_URL` is unset
and nothing answers at the default 127.0.0.1:5432, `ThrowawayPostgres` makes one:
Debian's `postgresql` package (installed by `tools/ensure-postgres.sh` when no
`initdb` is found), a new cluster in a temporary directory (`initdb`, trust
authentication, user `postgres`, database `test`), served by `postgres` itself
on a free loopback port with its socket in that directory, and stopped and
deleted at the end of the test session.

Postgres refuses to run as root: as root the cluster belongs to the `postgres`
user (created by the Debian package; `nobody` otherwise), and the server runs
as that user, a child process of the tests all the same, so stopping it needs
no `su` or `sudo`. Nothing is configured to be fast at the cost of safety
except durability (`fsync=off`), which a throwaway cluster does not need.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent
LOOPBACK = "127.0.0.1"


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a server accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _bindir() -> Path | None:
    """The newest Debian PostgreSQL server's bin directory, or the one of `initdb` on PATH."""
    found = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def server_binaries() -> Path:
    """The directory holding `initdb` and `postgres`, installing Debian's package if needed."""
    bindir = _bindir()
    if bindir is None:
        done = subprocess.run(
            ["bash", str(ROOT / "tools" / "ensure-postgres.sh")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"could not install PostgreSQL for the tests:\n{done.stderr}")
        bindir = _bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL was installed but no initdb was found")
    return bindir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class ThrowawayPostgres:
    """A Postgres cluster of its own on a loopback port; `start()`, then `stop()`."""

    def __init__(self) -> None:
        self.bindir = server_binaries()
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="canary-postgres-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                owner = pwd.getpwnam("nobody")
            self._as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)

    @property
    def url(self) -> str:
        """The admin URL the tests use (`CANARY_TEST_DATABASE_URL`'s form)."""
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/test"

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd=self.directory,
            check=False,
            **self._as,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def start(self, timeout: float = 60.0) -> ThrowawayPostgres:
        self._run(
            str(self.bindir / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-sync",
        )
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={LOOPBACK}",
                    "-c",
                    f"unix_socket_directories={self.directory}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                **self._as,
            )
        try:
            self._wait_ready(timeout)
            self._run(
                str(self.bindir / "createdb"),
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--username",
                "postgres",
                "test",
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log.read_text()}")
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-q"],
                stdin=subprocess.DEVNULL,
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres not ready after {timeout:g}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and delete the cluster."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Postgres' fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)
