"""A real Orthanc PACS with its DICOMweb plugin (Debian's ``orthanc`` + ``orthanc-dicomweb``) for tests: started on
127.0.0.1 at a free port with a temporary configuration and storage, HTTP basic authentication on, stopped after."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

PLUGIN_DIRS = (Path("/usr/share/orthanc/plugins"), Path("/usr/lib/orthanc"))
USER, PASSWORD = "reader", "pacs-s3cret-not-in-logs"


def dicomweb_plugin() -> Path | None:
    for d in PLUGIN_DIRS:
        for p in sorted(d.glob("libOrthancDicomWeb.so*")) if d.is_dir() else ():
            return p
    return None


def available() -> str | None:
    """None when Orthanc and its DICOMweb plugin are installed, else why not."""
    if shutil.which("Orthanc") is None:
        return "Orthanc not installed (Debian package orthanc)"
    if dicomweb_plugin() is None:
        return "Orthanc DICOMweb plugin not installed (Debian package orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def orthanc(folder: Path):
    """Yield the DICOMweb root ``http://127.0.0.1:PORT/dicom-web`` of a fresh Orthanc storing under ``folder``."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {"Name": "drasclr-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
              "Plugins": [str(dicomweb_plugin())], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/dicom-web/studies", auth=(USER, PASSWORD),
                                timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
