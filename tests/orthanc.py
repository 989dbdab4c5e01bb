"""A real PACS for the tests: Orthanc with its DICOMweb plugin as a plain process (Debian ``orthanc`` and
``orthanc-dicomweb``; CI installs them in ``.ci/run``).

``running_orthanc(folder)`` starts ``Orthanc config.json`` on a free loopback port with its storage in ``folder``
and yields the DICOMweb root URL; it stops the server afterwards. ``users={"name": "password"}`` turns HTTP basic
authentication on (``RegisteredUsers``); ``tls_proxy(url, PEM)`` serves it over HTTPS (Orthanc's own ``SslEnabled``
crashes in Debian 12's build: see ``tls_proxy``). Where Orthanc or the plugin is not installed the
test is skipped with the reason. ``start_orthanc`` is the same without pytest (raises :class:`OrthancMissing`;
``bench/bench_clinical.py`` uses it).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OrthancMissing(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed."""


@contextmanager
def running_orthanc(folder: Path, lua: str | None = None, users=None) -> Iterator[str]:
    """Orthanc serving DICOMweb at the yielded URL, or the test skipped with the reason."""
    try:
        with start_orthanc(folder, lua, users) as url:
            yield url
    except OrthancMissing as missing:
        pytest.skip(str(missing))
    except OrthancFailed as failed:
        pytest.fail(str(failed))


class OrthancFailed(RuntimeError):
    """Orthanc exited or did not answer; the message holds the end of its log."""


@contextmanager
def start_orthanc(folder: Path, lua: str | None = None, users: dict[str, str] | None = None) -> Iterator[str]:
    """Orthanc serving DICOMweb at the yielded URL; ``lua``: a Lua script (e.g. a ``ReceivedInstanceFilter``);
    ``users``: basic authentication with these accounts."""
    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if binary is None or not PLUGIN.is_file():
        raise OrthancMissing(
            "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "birads-calc-test",
        "HttpPort": port,
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users),
        "RegisteredUsers": dict(users or {}),
        "DicomServerEnabled": False,
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    if lua is not None:
        (folder / "filter.lua").write_text(lua)
        config["LuaScripts"] = [str(folder / "filter.lua")]
    (folder / "config.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([binary, "config.json"], cwd=folder, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}/system", process, folder / "orthanc.log")
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def tls_proxy(target: str, certificate: Path, client_ca: Path | None = None) -> Iterator[str]:
    """An HTTPS front for ``target`` (an http URL) with ``certificate`` (PEM with key): the yielded https URL.
    ``client_ca``: clients must show a certificate signed by this CA (mutual TLS).

    Orthanc 1.10.1 as Debian 12 ships it crashes on the first HTTPS request with ``SslEnabled`` (its civetweb calls a
    null OpenSSL function pointer: SIGSEGV in a civetweb worker), so the tests put TLS in front of it, as a hospital
    does with a reverse proxy. Requests and answers pass through unchanged (authentication stays Orthanc's).
    """
    import requests

    upstream = target.rstrip("/").rsplit("/dicom-web", 1)[0]

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = requests.request(self.command, upstream + self.path, headers=headers, data=body, timeout=60)
            self.send_response(answer.status_code, answer.reason)
            for key, value in answer.headers.items():
                if key.lower() not in ("transfer-encoding", "content-length", "content-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = _forward

        def log_message(self, *args):  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(certificate))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(str(client_ca))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web"
    finally:
        server.shutdown()
        server.server_close()


def _wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OrthancFailed(f"Orthanc exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 without credentials): up
        except OSError:
            time.sleep(0.2)
    raise OrthancFailed(f"Orthanc did not answer on {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
