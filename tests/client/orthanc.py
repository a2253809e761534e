"""A real PACS for the tests: Orthanc (Debian's ``orthanc`` and ``orthanc-dicomweb``) on loopback, with a temporary
configuration and storage, HTTP basic authentication, DICOMweb, and a DICOM port that accepts our AE title for
C-FIND, C-GET and C-STORE. Stopped by its PID."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "meddiff", "test-password"
ORTHANC_AET, OUR_AET = "ORTHANC", "MEDDIFF"


def missing_reason() -> str | None:
    if ORTHANC is None:
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb; .ci/run installs them)"
    if not DICOMWEB_PLUGIN.exists():
        return f"Orthanc's DICOMweb plugin {DICOMWEB_PLUGIN} is absent (apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Orthanc:
    folder: Path
    http_port: int
    dicom_port: int
    process: subprocess.Popen

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    def upload(self, files: list[Path]) -> int:
        """Store files through Orthanc's REST API (as a modality would push them); returns how many it kept."""
        kept = 0
        for path in files:
            reply = requests.post(f"{self.rest}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=30)
            kept += reply.status_code == 200
        return kept

    def delete_instance(self, sop_uid: str) -> None:
        found = requests.post(f"{self.rest}/tools/find", auth=(USER, PASSWORD), timeout=30,
                              json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}}).json()
        for orthanc_id in found:
            requests.delete(f"{self.rest}/instances/{orthanc_id}", auth=(USER, PASSWORD), timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_orthanc(folder: Path, our_port: int) -> Orthanc:
    """Start Orthanc in ``folder`` and wait until its REST API answers (bounded)."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "meddiff-test-pacs", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": ORTHANC_AET, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "HttpTimeout": 20,
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
        "DicomModalities": {"meddiff": {"AET": OUR_AET, "Host": "127.0.0.1", "Port": our_port, "AllowGet": True,
                                        "AllowFind": True, "AllowStore": True, "AllowEcho": True, "AllowMove": True}},
        "DicomCheckCalledAet": False, "UnknownSopClassAccepted": True, "ConcurrentJobs": 1,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(folder, http_port, dicom_port, process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode}: {(folder / 'orthanc.log').read_text()[-2000:]}")
        try:
            if requests.get(f"{server.rest}/system", auth=(USER, PASSWORD), timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"Orthanc did not answer within 60 s: {(folder / 'orthanc.log').read_text()[-2000:]}")


class TlsFront:
    """HTTPS in front of Orthanc's HTTP port, as a hospital's reverse proxy would serve it (Debian's Orthanc 1.10
    crashes on HTTPS connections of its own): TLS with the given certificate on loopback, bytes passed through."""

    def __init__(self, backend_port: int, certificate: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.backend_port, self.stopping, self.sockets = backend_port, threading.Event(), []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(30)
            secure = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):  # a client that does not trust the certificate hangs up here
            client.close()
            return
        backend = socket.create_connection(("127.0.0.1", self.backend_port), timeout=30)
        self.sockets += [secure, backend]
        threading.Thread(target=self._pump, args=(backend, secure), daemon=True).start()
        self._pump(secure, backend)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while not self.stopping.is_set():
                data = source.recv(65536)
                if not data:
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for sock in self.sockets:
            sock.close()
