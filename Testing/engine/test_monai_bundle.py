"""``drasclr export bundle``: a MONAI bundle that MONAI's own runner (``python -m monai.bundle run``) runs on the demo
CT, giving the subtype map of ``drasclr analyze`` on >= 99.9 % of lung voxels; its metadata passes MONAI's schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

DEMO_CT = Path(__file__).resolve().parents[2] / "DrasCLRSlicer" / "drasclr" / "data" / "demo_ct.nii.gz"


def run(*args, timeout=900):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    proc = run("-m", "drasclr", "export", "bundle", "-o", tmp / "B")
    assert proc.returncode == 0, proc.stderr
    return tmp / "B"


def test_bundle_layout_and_metadata(bundle):
    for rel in ("configs/metadata.json", "configs/inference.json", "models/model.safetensors", "models/model.pt",
                "docs/README.md", "LICENSE"):
        assert (bundle / rel).is_file(), rel
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["2"] == "cle"
    assert "location" in meta["network_data_format"]["inputs"]  # the anatomical-location input is documented
    import torch
    from safetensors.torch import load_file

    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    ref = load_file(str(bundle / "models" / "model.safetensors"))
    assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k].float()) for k in ref)


def test_metadata_passes_monais_schema(bundle, tmp_path):
    pytest.importorskip("jsonschema", reason="jsonschema not installed")
    import urllib.request

    from monai.bundle import verify_metadata

    from drasclr.bundle.export import SCHEMA

    schema = Path(os.environ.get("DRASCLR_MONAI_SCHEMA", Path.home() / ".cache" / "drasclr" / Path(SCHEMA).name))
    if not schema.is_file():
        try:
            with urllib.request.urlopen(SCHEMA, timeout=10) as response:  # bounded: CI may drop packets
                text = response.read()
            schema.parent.mkdir(parents=True, exist_ok=True)
            schema.write_bytes(text)
        except Exception as exc:  # no internet here: the schema is a release file, not a package
            pytest.skip(f"MONAI's metadata schema not available offline ({type(exc).__name__}); set "
                        "DRASCLR_MONAI_SCHEMA to a downloaded copy")
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))


def test_export_refuses_the_reference_classifier_and_an_existing_bundle(bundle, tmp_path):
    for args in (("cip-lh", "-o", tmp_path / "R"), ("-o", bundle)):
        proc = run("-m", "drasclr", "export", "bundle", *args)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert not (tmp_path / "R").exists()


@pytest.mark.slow
def test_monai_runner_gives_the_subtype_map_of_analyze(bundle, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "demo.nii.gz").symlink_to(DEMO_CT)
    proc = run("-m", "monai.bundle", "run", "--config_file", bundle / "configs" / "inference.json", "--bundle_root",
               bundle, "--dataset_dir", tmp_path / "in", "--output_dir", tmp_path / "eval", "--tta", "False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run("-m", "drasclr", "analyze", DEMO_CT, "-o", tmp_path / "ref", "--no-tta", "--quiet")
    assert proc.returncode == 0, proc.stderr
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "eval" / "demo_subtypes.nii.gz")))
    want = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ref" / "subtypes.nii.gz")))
    lung = (got > 0) | (want > 0)
    assert lung.sum() > 10000 and len(np.unique(want[lung])) >= 2
    assert (got[lung] == want[lung]).mean() >= 0.999
