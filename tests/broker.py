"""A real mosquitto broker for tests: plain, TLS and password listeners on loopback.

:func:`start_broker` writes a config into a directory, creates a CA and a
server certificate with ``openssl`` (installed with apt-get when missing) and
starts ``mosquitto`` on free loopback ports.  :class:`Broker` can be killed
and restarted on the same ports (its persistence file keeps sessions and
queued QoS 1 messages across a graceful stop).  The ``mosquitto`` fixture is
session-scoped; tests that kill the broker use ``fresh_broker``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ports import free_port  # tests/ is on sys.path

__all__ = ["Broker", "free_port", "fresh_broker", "mosquitto", "start_broker"]

USERNAME = "reactor"
PASSWORD = "s3cret-Pa55"


def _need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=False, capture_output=True)
        path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    if path is None:
        pytest.skip(f"{tool} is not installed (apt-get install {package})")
    return path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run([_need("openssl", "openssl"), *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (cert, key)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert), cwd=directory)  # fmt: skip
    return cert, key


def make_server_cert(directory: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1/localhost signed by ``ca``: (cert, key)."""
    cert, key, csr = directory / "server.crt", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", str(key),
             "-out", str(csr), cwd=directory)  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=directory)  # fmt: skip
    return cert, key


@dataclass
class Broker:
    """A running mosquitto: ``port`` (anonymous), ``tls_port`` (``ca``), ``auth_port`` (USERNAME/PASSWORD)."""

    directory: Path
    port: int
    tls_port: int
    auth_port: int
    ca: Path
    other_ca: Path
    username: str = USERNAME
    password: str = PASSWORD
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def config(self) -> Path:
        return self.directory / "mosquitto.conf"

    def start(self) -> None:
        log = open(self.directory / "mosquitto.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([_need("mosquitto", "mosquitto"), "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        for port in (self.port, self.tls_port, self.auth_port):
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {self.log_text()}")
                time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, sig: int = signal.SIGTERM, down: float = 0.0) -> None:
        """Stop (SIGTERM saves sessions and queued messages; SIGKILL does not) and start on the same ports."""
        self.stop(sig)
        if down:
            time.sleep(down)
        self.start()

    def log_text(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "mosquitto.log").read_text(errors="replace")[-4000:]
        return ""


def start_broker(directory: Path) -> Broker:
    """Write a config, certificates and a password file into ``directory`` and start mosquitto."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory, "ca")
    other_ca, _ = make_ca(directory, "other-ca")
    cert, key = make_server_cert(directory, ca)
    passwd = directory / "passwd"
    passwd.write_text(f"{USERNAME}:{PASSWORD}\n")
    subprocess.run([_need("mosquitto_passwd", "mosquitto"), "-U", str(passwd)], check=True, capture_output=True)
    os.chmod(passwd, 0o600)
    for attempt in range(5):
        b = Broker(directory, free_port(), free_port(), free_port(), ca[0], other_ca)
        _write_config(b, ca[0], cert, key, passwd)
        (directory / "mosquitto.log").unlink(missing_ok=True)
        try:
            b.start()
        except RuntimeError:
            b.stop()
            if "Address already in use" not in b.log_text() or attempt == 4:
                raise
            continue  # another process took a port meanwhile: new ports
        return b
    raise AssertionError("unreachable")


def _write_config(b: Broker, ca: Path, cert: Path, key: Path, passwd: Path) -> None:
    b.config.write_text(
        f"""per_listener_settings true
{"user root" if os.geteuid() == 0 else ""}
persistence true
persistence_location {b.directory}/
autosave_interval 1
log_dest stderr
log_type error
log_type warning
log_type notice
max_queued_messages 100000
listener {b.port} 127.0.0.1
allow_anonymous true
listener {b.tls_port} 127.0.0.1
allow_anonymous true
cafile {ca}
certfile {cert}
keyfile {key}
listener {b.auth_port} 127.0.0.1
allow_anonymous false
password_file {passwd}
"""
    )


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the whole session (do not kill it)."""
    b = start_broker(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of one's own, to kill and restart."""
    b = start_broker(tmp_path / "mosquitto")
    try:
        yield b
    finally:
        b.stop()
