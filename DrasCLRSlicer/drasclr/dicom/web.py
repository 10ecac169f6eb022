"""A DICOMweb server (a PACS such as Orthanc) as the input and, with ``--push``, the destination of ``analyze``.

``dicomweb://HOST:PORT/PREFIX`` is reached over http, ``dicomwebs://`` over https (TLS, verified; a private CA
bundle can be named in the configuration). The series is retrieved with WADO-RS into a temporary folder, analysed
like a DICOM folder, and the SEGs and the SR are stored back with STOW-RS into the same study.

Credentials never come from the command line: a user:password in the URL is refused. They are read from the
environment (``DRASCLR_DICOMWEB_USERNAME``/``DRASCLR_DICOMWEB_PASSWORD``) or from a JSON file
(``DRASCLR_DICOMWEB_CONFIG``, default ``~/.config/drasclr/dicomweb.json``)::

    {"servers": {"dicomweb://pacs.example.org/dicom-web": {"username": "u", "password": "p", "ca_bundle": "ca.pem"}}}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import urlsplit

from ..core.errors import InputError

log = logging.getLogger(__name__)
SCHEMES = {"dicomweb": "http", "dicomwebs": "https"}
CHEST_PARTS = {"", "CHEST", "LUNG", "THORAX", "CHESTABDOMEN", "CHEST_ABDOMEN", "CHESTABDOMENPELVIS", "TORSO",
               "WHOLEBODY"}


def is_dicomweb(text: str) -> bool:
    return str(text).split("://", 1)[0].lower() in SCHEMES and "://" in str(text)


def _config(url: str) -> dict:
    """Credentials and TLS settings for ``url`` from the environment or the configuration file."""
    path = Path(os.environ.get("DRASCLR_DICOMWEB_CONFIG", Path.home() / ".config" / "drasclr" / "dicomweb.json"))
    entry: dict = {}
    if path.is_file():
        try:
            servers = json.loads(path.read_text()).get("servers", {})
        except (OSError, ValueError) as exc:
            raise InputError(f"DICOMweb configuration {path} is not readable JSON: {exc}") from None
        entry = dict(servers.get(url.rstrip("/"), servers.get(url, {})))
    if os.environ.get("DRASCLR_DICOMWEB_USERNAME"):
        entry["username"] = os.environ["DRASCLR_DICOMWEB_USERNAME"]
        entry["password"] = os.environ.get("DRASCLR_DICOMWEB_PASSWORD", "")
    return entry


def connect(url: str):
    """A ``dicomweb_client.DICOMwebClient`` for ``dicomweb[s]://...`` with the configured credentials."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise InputError("credentials in the DICOMweb URL are refused (they would show in process lists and logs); "
                         "use DRASCLR_DICOMWEB_USERNAME/PASSWORD or the configuration file (docs/dicom.md)")
    if not parts.hostname:
        raise InputError(f"not a DICOMweb URL: {url} (expected dicomweb://HOST:PORT/PREFIX)")
    try:
        import requests
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise InputError("DICOMweb needs dicomweb-client: pip install 'drasclr[dicom]'") from None
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # it logs every request at INFO
    conf = _config(url)
    session = requests.Session()
    if conf.get("username"):
        session.auth = (conf["username"], conf.get("password", ""))
    if conf.get("ca_bundle"):
        session.verify = conf["ca_bundle"]
    http = parts._replace(scheme=SCHEMES[parts.scheme.lower()]).geturl()
    client = DICOMwebClient(url=http, session=session)
    client.set_http_retry_params(max_attempts=3, wait_exponential_multiplier=250)  # a dead server: seconds, not 30
    return client


def _server_error(exc: Exception, what: str) -> InputError:
    """One line for a failed request; the server's address only (never credentials)."""
    response = getattr(exc, "response", None)
    if response is not None and response.status_code in (401, 403):
        return InputError(f"DICOMweb server refused the credentials while {what} (HTTP {response.status_code})")
    if response is not None and response.status_code == 404:
        return InputError(f"DICOMweb server has no such study/series while {what} (HTTP 404)")
    if response is not None:
        return InputError(f"DICOMweb server answered HTTP {response.status_code} while {what}")
    return InputError(f"cannot reach the DICOMweb server while {what}: {type(exc).__name__}")


def check_series(client, study: str, series: str) -> None:
    """Refuse a series that is missing or not a chest CT (QIDO-RS), before anything is retrieved."""
    try:
        found = client.search_for_series(study_instance_uid=study, search_filters={"SeriesInstanceUID": series},
                                         fields=["Modality", "BodyPartExamined"])
    except Exception as exc:  # requests' errors and HTTP errors
        raise _server_error(exc, "searching the series") from None
    if not found:
        raise InputError(f"series {series} of study {study} not found on the DICOMweb server")
    tags = found[0]
    modality = (tags.get("00080060", {}).get("Value") or [""])[0]
    part = (tags.get("00180015", {}).get("Value") or [""])[0]
    if modality != "CT":
        raise InputError(f"series {series} has modality {modality or 'unknown'}; expected a chest CT")
    if str(part).upper().replace(" ", "") not in CHEST_PARTS:
        raise InputError(f"series {series} is a CT of {part}, not of the chest")


def retrieve(client, study: str, series: str, folder: Path) -> int:
    """WADO-RS: store the series' instances as files in ``folder``; returns their number."""
    try:
        instances = client.retrieve_series(study, series)
    except Exception as exc:
        raise _server_error(exc, "retrieving the series") from None
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(instances):
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)
    return len(instances)


def store(client, files: list[Path]) -> None:
    """STOW-RS the SEGs and the SR (all or none: one request)."""
    import pydicom

    try:
        client.store_instances([pydicom.dcmread(f) for f in files])
    except Exception as exc:
        raise _server_error(exc, "storing the results") from None


def analyze_remote(args, run_one) -> int:
    """``drasclr analyze dicomweb://... --study UID --series UID -o OUT [--push]``: retrieve, analyse with
    ``run_one(args, folder)`` (the CLI's single-case path), and with ``--push`` store ``OUT/dicom/*`` back."""
    import tempfile

    from ..core.outputs import check_output_location

    if not args.study or not args.series:
        raise InputError("a DICOMweb input needs --study UID and --series UID")
    check_output_location(args.output, overwrite=args.overwrite)
    client = connect(args.input)
    check_series(client, args.study, args.series)
    args.dicom = args.dicom or args.push
    with tempfile.TemporaryDirectory(prefix="drasclr-dicomweb-") as tmp:
        n = retrieve(client, args.study, args.series, Path(tmp) / "series")
        log.info("retrieved %d instances of the series (WADO-RS)", n)
        code = run_one(args, Path(tmp) / "series")
    if code == 0 and args.push:
        files = sorted((Path(args.output) / "dicom").glob("*.dcm"))
        store(client, files)
        print(f"stored {len(files)} DICOM objects (SEG, SR) in study {args.study} (STOW-RS)")
    return code
