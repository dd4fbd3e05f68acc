"""Database outages on demand: a throwaway Postgres cluster to stop, and a TCP proxy
that can black-hole the connection (open, no bytes) like a hung server or a dead
network path that still completes handshakes.

`PostgresCluster` runs Debian's own binaries (`initdb`, `pg_ctl`) on a free
loopback port in a temporary directory, never the shared server on 5432, so a
test may stop it with `pg_ctl stop -m immediate` (a crash, not a clean shutdown)
and start it again. As root (the development containers) the binaries run as
the `postgres` user, since Postgres refuses to run as root.

`BlackHoleProxy` forwards 127.0.0.1:port to a target port. `black_hole()` makes
it stop moving bytes in both directions, on open connections and on new ones
(which it still accepts); `restore()` lets the held bytes through again.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.metrics.servers import LOOPBACK, free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PostgresCluster:
    """A Postgres server of its own: `start`, `stop` (immediate), `url`, `close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="canary-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{LOOPBACK}:{self.port}/postgres"

    def _run(self, binary: str, *args: str) -> None:
        command = [str(PG_BIN / binary), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.dir} -c fsync=off"
            " -c full_page_writes=off"
        )
        log = str(self.dir / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop it the way a crash would: no checkpoint, every connection cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class BlackHoleProxy:
    """127.0.0.1:`port` forwarded to 127.0.0.1:`target`, until `black_hole()`."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def black_hole(self) -> None:
        """Accept connections and hold every byte, in both directions."""
        self._forwarding.clear()

    def restore(self) -> None:
        self._forwarding.set()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((LOOPBACK, self.target), timeout=5)
            except OSError:
                client.close()  # the server is down: refused, as it would be directly
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while not self._closing.is_set():
                if not self._forwarding.wait(0.05):
                    continue  # black-holed: the bytes wait in the kernel's buffers
                ready, _, _ = select.select([src], [], [], 0.05)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except (OSError, ValueError):  # ValueError: `close()` closed the socket under select
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()
