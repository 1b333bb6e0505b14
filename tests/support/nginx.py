"""A real nginx running ``deploy/nginx.conf`` for tests: find (or install) the binary, make a
self-signed certificate, render the file with the machine-specific lines swapped, run it.

Used by ``tests/deploy/test_nginx.py`` (clients speak HTTPS/WSS to nginx) and by the "cluster" test
deployment (``tests/support/cluster.py``: nginx in front of ``gunicorn -w 4``), whose clients are the API
test suites speaking plain HTTP/WS; for them :func:`render` has a ``tls=False`` variant (see there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support.processes import REPO, descendants, free_port, kill_all

NGINX_CONF: Final = REPO / "deploy" / "nginx.conf"
APT_TIMEOUT: Final = 600


# -- binaries ----------------------------------------------------------------------------------
def apt_install(*packages: str) -> None:
    """``apt-get install`` (after ``apt-get update`` if the package lists do not know them)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"{' and '.join(packages)} missing, and this is not root on Debian: install them "
                    f"(apt-get install -y --no-install-recommends {' '.join(packages)}) or run .ci/run")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", *packages]
    result = subprocess.run(install, check=False, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=300"], check=False, env=env,
                       capture_output=True, text=True, timeout=APT_TIMEOUT)
        result = subprocess.run(install, check=False, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"could not install {packages}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def tool(name: str, package: str) -> str:
    """The path of the program ``name``, installing Debian's ``package`` first if it is missing (a
    missing tool fails the test, it never skips)."""

    def find() -> str | None:
        return shutil.which(name) or next(
            (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
        )

    found = find()
    if found is None:
        apt_install(package)
        found = find()
    if found is None:
        pytest.fail(f"{package} is installed but `{name}` is not on PATH or in /usr/sbin")
    return found


# -- TLS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cert:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client that trusts this certificate and nothing else (hostname checks on)."""
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed_cert(directory: Path) -> Cert:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [tool("openssl", "openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return Cert(cert, key)


# -- the configuration -------------------------------------------------------------------------
def render(upstream_port: int, http_port: int, https_port: int, cert: Cert, access_log: Path, *,
           tls: bool = True, upstream_keepalive: bool = True) -> str:
    """deploy/nginx.conf with the machine-specific lines swapped; each must be there exactly once.

    Two swaps beyond the machine's own, for the cluster test deployment (``tests/support/cluster.py``):

    - ``tls=False``: the proxied server block (the file's ``listen 443 ssl``) listens on
      ``https_port`` *without* ``ssl``, i.e. speaks plain HTTP/WS, for clients that cannot speak
      TLS (the API test suites).
    - ``upstream_keepalive=False``: no ``keepalive`` pool of idle upstream connections. With it,
      nginx sends a client's consecutive requests down the connection it used last, i.e. to the
      same gunicorn worker, and the REST suites would hardly ever reach a job's owner through
      another worker (measured: 2 forwarded requests in the REST suites, ~450 without the pool).
      Without it every request is a new connection, accepted by whichever worker takes it.

    Every other line — the proxy and WebSocket directives, timeouts, body limit, error pages,
    headers, even the (then unused) certificate settings — stays as the file has it.
    """
    text = NGINX_CONF.read_text()
    swaps = [
        ("server routilux:20555;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 80;", f"listen 127.0.0.1:{http_port};"),
        ("listen [::]:80;", ""),
        ("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;" if tls else f"listen 127.0.0.1:{https_port};"),
        ("listen [::]:443 ssl;", ""),
        ("/etc/nginx/certs/fullchain.pem", str(cert.cert)),
        ("/etc/nginx/certs/privkey.pem", str(cert.key)),
        ("access_log /var/log/nginx/access.log routilux;", f"access_log {access_log} routilux;"),
        ("keepalive 16;", "keepalive 16;" if upstream_keepalive else ""),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"deploy/nginx.conf should contain {old!r} exactly once"
        text = text.replace(old, new)
    return text


class Nginx:
    """nginx in the foreground (``daemon off``), a child of this process, with its own prefix, pid
    file and logs in ``directory``; in front of the app on ``upstream_port``. ``tls=False``: the
    proxied server block speaks plain HTTP (see :func:`render`, also for ``upstream_keepalive``);
    ``url`` and ``ws_url`` follow."""

    def __init__(self, binary: str, directory: Path, upstream_port: int, cert: Cert, *, tls: bool = True,
                 upstream_keepalive: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.tls = tls
        self.http_port, self.https_port = free_port(), free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.https_port}"
        self.ws_url = f"{'wss' if tls else 'ws'}://127.0.0.1:{self.https_port}"
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"
        self.cert = cert
        conf = directory / "nginx.conf"
        conf.write_text(render(upstream_port, self.http_port, self.https_port, cert, self.access_log, tls=tls,
                                 upstream_keepalive=upstream_keepalive))
        globals_ = f"daemon off; pid {directory / 'nginx.pid'};"
        if os.geteuid() == 0:
            globals_ += " user root;"  # workers as nobody could not enter pytest's private temp dirs
        self.argv = [binary, "-p", f"{directory}/", "-c", str(conf), "-e", str(self.error_log), "-g", globals_]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> Nginx:
        check = subprocess.run([*self.argv, "-t", "-q"], check=False, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t refused the rendered config:\n{check.stderr}\n{self.errors()}"
        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise AssertionError(f"nginx did not listen within {timeout}s:\n{self.errors()}")

    def errors(self) -> str:
        return self.error_log.read_text(errors="replace")[-3000:] if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        workers = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)  # fast shutdown: workers close their connections
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        kill_all(workers)  # never leave a worker behind, whatever happened to the master

    def _verify(self) -> ssl.SSLContext | bool:
        return self.cert.client_context() if self.tls else False

    def client(self, **options: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self._verify(), timeout=10, **options)

    def async_client(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, verify=self._verify(), timeout=10, **options)

    async def ws(self, path: str, **options: Any) -> ClientConnection:
        tls = {"ssl": self.cert.client_context()} if self.tls else {}
        return await connect(self.ws_url + path, proxy=None, open_timeout=5, close_timeout=2, ping_interval=None,
                             **tls, **options)
