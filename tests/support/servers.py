"""Servers the tests start on 127.0.0.1 and stop themselves: a free port, waiting for a URL to answer, and an
`mlflow server` (the tracking server a cluster's sweep writes to) that a test can take away and bring back."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen | None = None, timeout: float = 120) -> None:
    """Until `url` answers; fails at once when the process that should serve it has exited."""
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.time() > deadline or (proc is not None and proc.poll() is not None):
                raise AssertionError(f"{url} did not come up (exit {proc.poll() if proc else None})") from None
            time.sleep(0.5)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 over a SQLite store in `folder`, artifacts served through it. `stop` kills its
    whole process group (the server and its workers) as a crash would; `start` again serves the same store on the
    same port; `wait_for_a_client`, while it is stopped, says when a client is trying to reach it."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder, self.port = Path(folder), port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db",
                   "--artifacts-destination", str(self.folder / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(f"{self.uri}/health", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=60)
        self.proc = None

    def wait_for_a_client(self, timeout: float = 300) -> None:
        """While stopped: until a client connects to its port, proof that the client is waiting on the server now
        (no guessing how long its work takes). The connection is reset at once, as a server killed mid-request
        resets it; the client's retries then meet a refused port until `start`."""
        assert self.proc is None, "the server is serving: stop it first"
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.time() + 60
            while True:  # the killed group's last processes may hold the port for a moment
                try:
                    listener.bind(("127.0.0.1", self.port))
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            listener.listen(1)
            listener.settimeout(timeout)
            try:
                client, _ = listener.accept()
            except TimeoutError:
                raise AssertionError(f"no client tried {self.uri} within {timeout:.0f} s") from None
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # closed with a reset
            client.close()

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
