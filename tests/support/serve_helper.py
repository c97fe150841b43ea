"""Start `grok-edge serve` in a subprocess on 127.0.0.1 (a free port the server picks) for tests and
bench/serve_load.py; stop it at the end."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_server(model: str | os.PathLike[str], *args: str, timeout: float = 120.0) -> Iterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) of a server for ``model`` started with ``args``."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        log = open(Path(tmp) / "log", "w+b")  # noqa: SIM115 (closed below, after the process)
        cmd = [
            sys.executable,
            "-m",
            "edge.cli",
            "serve",
            str(model),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ]
        # cwd: not the repository, whose edge/ (without the built library) would shadow the installed one
        proc = subprocess.Popen([*cmd, *args], stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            deadline = time.monotonic() + timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the server did not start: {log.read().decode(errors='replace')}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{int(port_file.read_text())}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
