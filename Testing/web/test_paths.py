"""Paths from the browser are checked: nothing outside the data and model folders is opened or written."""

from __future__ import annotations

import os

import pytest

from DrasCLRSlicerWeb.paths import DEMO_CT, PathRejected, Workspace, safe_file_name


@pytest.fixture
def ws(tmp_path):
    data = tmp_path / "data"
    (data / "cts").mkdir(parents=True)
    (data / "cts" / "a.nii.gz").write_bytes(b"x")
    (data / "cts" / "notes.txt").write_text("x")
    (tmp_path / "secret.nii.gz").write_bytes(b"x")
    return Workspace(data)


def test_inside_paths_are_accepted_relative_or_absolute(ws):
    assert ws.resolve_input("cts/a.nii.gz") == ws.data_root / "cts" / "a.nii.gz"
    assert ws.resolve_input(str(ws.data_root / "cts" / "a.nii.gz")) == ws.data_root / "cts" / "a.nii.gz"
    assert ws.resolve_input("cts") == ws.data_root / "cts"  # a DICOM folder
    assert ws.resolve_input(str(DEMO_CT)) == DEMO_CT.resolve()
    assert ws.models_root == ws.data_root / "models" and ws.models_root.is_dir()


@pytest.mark.parametrize("text", ["../secret.nii.gz", "cts/../../secret.nii.gz", "/etc/passwd", "~/x.nii.gz", "",
                                  "cts/missing.nii.gz", "cts/notes.txt", "a\x00b"])
def test_outside_missing_or_non_image_paths_are_refused(ws, text):
    with pytest.raises(PathRejected):
        ws.resolve_input(text)


def test_symlink_out_of_the_data_folder_is_refused(ws, tmp_path):
    link = ws.data_root / "cts" / "link.nii.gz"
    os.symlink(tmp_path / "secret.nii.gz", link)
    with pytest.raises(PathRejected, match="only files inside"):
        ws.resolve_input("cts/link.nii.gz")


def test_upload_names_are_reduced_to_plain_image_names(ws):
    s = ws.new_session()
    assert s.folder.parent == ws.sessions_root and s.folder.is_dir()
    assert s.upload_path("../../evil.nii.gz") == s.folder / "uploads" / "evil.nii.gz"
    assert s.upload_path("C:\\x\\scan 1.nrrd").name == "scan_1.nrrd"
    assert safe_file_name(".hidden.mha") == "hidden.mha"
    for bad in ("run.sh", "x.nii.gz/", "..", ""):
        with pytest.raises(PathRejected):
            s.upload_path(bad)


def test_sessions_are_separate_and_ids_checked(ws):
    a, b = ws.new_session(), ws.new_session()
    assert a.folder != b.folder
    assert a.run_dir("analysis").name == "analysis-001" and a.run_dir("analysis").name == "analysis-002"
    assert not (b.folder / "analysis-001").exists()
    for bad in ("../x", "a/b", "", "x" * 65):
        with pytest.raises(PathRejected):
            ws.session(bad)


def test_exports_are_served_from_the_session_export_folder_only(ws, tmp_path):
    s = ws.new_session()
    (s.export_dir() / "stats.csv").write_text("region\n")
    assert s.export_file("stats.csv").read_text() == "region\n"
    for bad in ("../uploads", "missing.csv", ".hidden", str(tmp_path / "secret.nii.gz")):
        with pytest.raises(PathRejected):
            s.export_file(bad)


def test_models_must_be_this_servers(ws, tmp_path):
    bundled = tmp_path / "bundled"
    (bundled / "m-v1").mkdir(parents=True)
    (bundled / "m-v1" / "model.safetensors").write_bytes(b"x")
    assert ws.resolve_model(str(bundled / "m-v1"), bundled) == bundled / "m-v1"
    other = tmp_path / "other-v1"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"x")
    with pytest.raises(PathRejected):
        ws.resolve_model(str(other), bundled)
