"""PACS in and out with a real Orthanc + DICOMweb plugin: ``drasclr analyze dicomweb://... --study --series --push``
retrieves the series (WADO-RS), analyses it and stores the SEG and SR back (STOW-RS), where QIDO-RS finds them;
bad server, bad UID, wrong credentials and a non-CT series give one ``error:`` line and store nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cli_runner
import orthanc_server
from dicom_checks import assert_regions_equal, assert_sr_equals_csv, source_order
from dicom_writer import write_dicom_series
from drasclr.core.io import read_image

pytest.importorskip("highdicom", reason="highdicom not installed (pip install '.[dicom]')")
dicomweb_client = pytest.importorskip("dicomweb_client", reason="dicomweb-client not installed")
DEMO_CT = Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "drasclr" / "data" / "demo_ct.nii.gz"
pytestmark = pytest.mark.skipif(orthanc_server.available() is not None, reason=str(orthanc_server.available()))


def _client(url):
    import requests

    session = requests.Session()
    session.auth = (orthanc_server.USER, orthanc_server.PASSWORD)
    return dicomweb_client.DICOMwebClient(url=url, session=session)


def _upload(client, folder: Path) -> None:
    import pydicom

    client.store_instances([pydicom.dcmread(f) for f in sorted(folder.iterdir())])


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding the demo CT (a real DICOM series) and an MR series in the same study."""
    import pydicom

    tmp = tmp_path_factory.mktemp("pacs")
    ct = read_image(DEMO_CT)
    series = write_dicom_series(ct, tmp / "ct")
    mr = write_dicom_series(ct.crop((0, 0, 0), (8, 144, 144)), tmp / "mr", modality="MR")
    study = pydicom.dcmread(next((tmp / "ct").iterdir())).StudyInstanceUID
    with orthanc_server.orthanc(tmp / "orthanc") as url:
        client = _client(url)
        _upload(client, tmp / "ct")
        _upload(client, tmp / "mr")
        mr_study = pydicom.dcmread(next((tmp / "mr").iterdir())).StudyInstanceUID
        yield {"url": url, "client": client, "study": study, "series": series, "mr": (mr_study, mr),
               "source": tmp / "ct"}


def run_cli(*args, password=orthanc_server.PASSWORD):
    env = {**os.environ, "DRASCLR_DICOMWEB_USERNAME": orthanc_server.USER, "DRASCLR_DICOMWEB_PASSWORD": password,
           "DRASCLR_DICOMWEB_CONFIG": "/nonexistent"}
    return cli_runner.run_cli(*args, env=env)


def _web(url: str) -> str:
    return url.replace("http://", "dicomweb://")


def _instances(client) -> int:
    return sum(len(client.search_for_instances(study_instance_uid=s["0020000D"]["Value"][0]))
               for s in client.search_for_studies())


@pytest.mark.slow
def test_push_stores_seg_and_sr_that_match_the_outputs(pacs, tmp_path):
    import highdicom as hd

    out = tmp_path / "out"
    proc = run_cli("analyze", _web(pacs["url"]), "--study", pacs["study"], "--series", pacs["series"], "-o", out,
                   "--push", "--no-model", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert orthanc_server.PASSWORD not in proc.stdout + proc.stderr
    client = pacs["client"]
    found = {s["00080060"]["Value"][0]: s["0020000E"]["Value"][0]
             for s in client.search_for_series(study_instance_uid=pacs["study"])}  # QIDO-RS
    assert set(found) == {"CT", "SEG", "SR"}
    (seg,) = client.retrieve_series(pacs["study"], found["SEG"])
    (sr,) = client.retrieve_series(pacs["study"], found["SR"])
    seg, sr = hd.seg.Segmentation.from_dataset(seg), hd.sr.Comprehensive3DSR.from_dataset(sr)
    uids = source_order(pacs["source"])
    assert_regions_equal(seg, out / "regions.nii.gz", uids)
    assert_sr_equals_csv(sr, out / "stats.csv", seg.SOPInstanceUID, set(uids))


@pytest.mark.parametrize("case", ["bad_series", "bad_server", "wrong_password", "mr_series", "url_credentials"])
def test_bad_requests_give_one_error_line_and_store_nothing(pacs, tmp_path, case):
    url, study, series, password = _web(pacs["url"]), pacs["study"], "1.2.3.999", orthanc_server.PASSWORD
    if case == "bad_server":
        url = f"dicomweb://127.0.0.1:{orthanc_server.free_port()}/dicom-web"
    elif case == "wrong_password":
        series, password = pacs["series"], "wrong"
    elif case == "mr_series":
        study, series = pacs["mr"]
    elif case == "url_credentials":
        url, series = url.replace("dicomweb://", f"dicomweb://{orthanc_server.USER}:{password}@"), pacs["series"]
    before = _instances(pacs["client"])
    out = tmp_path / "out"
    proc = run_cli("analyze", url, "--study", study, "--series", series, "-o", out, "--push", "--no-model",
                   password=password)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert orthanc_server.PASSWORD not in proc.stderr + proc.stdout
    assert not out.exists() and _instances(pacs["client"]) == before
