"""What one reader's page must not reach: another session's files, another user's models, the server's own files;
uploads are capped and checked before anything is written or read; browser-supplied names cannot climb out.
(The gateway's side, by URL: test_gateway.py; two users in a real browser: test_two_users.py.)"""

from __future__ import annotations

import gzip
import os
import struct

import pytest

from DrasCLRSlicerWeb.paths import PathRejected, Workspace, check_upload


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path / "data")
    (ws.data_root / "cts").mkdir()
    (ws.data_root / "cts" / "shared.nii.gz").write_bytes(b"x")
    return ws


def upload(session, name="scan.nii.gz"):
    path = session.upload_path(name)
    path.write_bytes(b"x")
    return path


def test_a_session_cannot_open_another_sessions_files(ws):
    mine, theirs = ws.new_session(), ws.new_session()
    own, other = upload(mine), upload(theirs)
    (theirs.export_dir() / "stats.csv").write_text("x")
    assert ws.resolve_input(str(own), own=mine.folder) == own
    assert ws.resolve_input("cts/shared.nii.gz", own=mine.folder).name == "shared.nii.gz"
    for text in (str(other), f"sessions/{theirs.id}/uploads/scan.nii.gz", f"sessions/{theirs.id}",
                 f"cts/../sessions/{theirs.id}/uploads/scan.nii.gz",
                 f"sessions/{mine.id}/../{theirs.id}/uploads/scan.nii.gz", f"sessions/{theirs.id}/exports"):
        with pytest.raises(PathRejected, match="not open to this session"):
            ws.resolve_input(text, own=mine.folder)


def test_a_link_into_another_session_is_refused(ws):
    mine, theirs = ws.new_session(), ws.new_session()
    other = upload(theirs)
    os.symlink(other, ws.data_root / "cts" / "looks-shared.nii.gz")
    (mine.folder / "uploads").mkdir()
    os.symlink(other, mine.folder / "uploads" / "mine.nii.gz")
    for text in ("cts/looks-shared.nii.gz", str(mine.folder / "uploads" / "mine.nii.gz")):
        with pytest.raises(PathRejected):
            ws.resolve_input(text, own=mine.folder)


def test_server_files_users_and_models_are_not_open(ws):
    mine = ws.new_session()
    for folder in ("run/logs", "users/bob/models/tiny-v2", "models/demo-v6"):
        (ws.data_root / folder).mkdir(parents=True)
        (ws.data_root / folder / "x.nii.gz").write_bytes(b"x")
    (ws.data_root / "audit.log").write_text("{}\n")
    for text in ("run/logs/x.nii.gz", "users/bob/models/tiny-v2/x.nii.gz", "models/demo-v6/x.nii.gz", "audit.log",
                 "users"):
        with pytest.raises(PathRejected):
            ws.resolve_input(text, own=mine.folder)


def test_another_users_model_version_is_refused(tmp_path):
    data = tmp_path / "data"
    alice = Workspace(data, data / "users" / "alice" / "models")
    bob_model = data / "users" / "bob" / "models" / "tiny-v2"
    bob_model.mkdir(parents=True)
    (bob_model / "model.safetensors").write_bytes(b"x")
    bundled = tmp_path / "bundled"
    for text in (str(bob_model), f"{alice.models_root}/../../bob/models/tiny-v2"):
        with pytest.raises(PathRejected, match="not a model of this server"):
            alice.resolve_model(text, bundled)


def nifti_header() -> bytes:
    return struct.pack("<i", 348) + b"\0" * 344 + b"n+1\0"


@pytest.mark.parametrize("name,content,match", [
    ("scan.nii.gz", gzip.compress(nifti_header() + os.urandom(2000)), "over the upload limit"),
    ("scan.nii.gz", gzip.compress(b"#!/bin/sh\nrm -rf /\n" + b"\0" * 400), "header does not match"),
    ("scan.nii.gz", b"not gzip at all", "header does not match"),
    ("scan.nrrd", b"<html>", "header does not match"),
    ("scan.mha", b"\x89PNG\r\n", "header does not match"),
    ("scan.mhd", b"ObjectType = Image\nElementDataFile = /etc/shadow\n", "single-file"),
    ("scan.nhdr", b"NRRD0004\ndata file: ../../other/secret.raw\n", "single-file"),
])
def test_uploads_are_capped_and_checked_before_any_work(name, content, match):
    with pytest.raises(PathRejected, match=match):
        check_upload(content, name, max_bytes=1000)


def test_real_image_headers_pass():
    check_upload(gzip.compress(nifti_header() + b"\0" * 100), "a.nii.gz", 2**20)
    check_upload(nifti_header(), "a.nii", 2**20)
    check_upload(b"NRRD0004\ntype: short\n", "a.nrrd", 2**20)
    check_upload(b"ObjectType = Image\nNDims = 3\nElementDataFile = LOCAL\n", "a.mha", 2**20)
