"""Hostile inputs to every other command: model folders and cards, pretrain, finetune, evaluate, outcome,
phantom, batch analysis (exit 3), and SIGTERM (temporary outputs removed). The contract as in
test_hostile_inputs.py; catalogue: docs/hostile_inputs.md."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from drasclr.core.errors import InputError
from drasclr.core.image import CTImage
from drasclr.core.io import write_image
from hostile import leftovers, refused, run, small_chest, truncated, write_chest

REPO = Path(__file__).resolve().parents[2]
TINY = {"encoder": {"channels": [2, 2, 4, 4, 8, 8, 8], "num_experts": 2, "in_channels": 1},
        "decoder": [8, 8, 8, 8, 8]}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from drasclr.dense.segmenter import SubtypeSegmenter
    from drasclr.dense.store import save_segmenter

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models") / "tiny-v1"
    save_segmenter(SubtypeSegmenter(**TINY), folder, {"name": "tiny", "version": "tiny-v1"})
    return folder


def _broken_model(root: Path, tiny: Path, name: str, edit) -> Path:
    """A copy of the tiny model whose card (dict) or files are changed by ``edit(folder, card) -> card``."""
    import shutil

    folder = root / name.replace(" ", "_")
    shutil.copytree(tiny, folder)
    card = json.loads((folder / "model.json").read_text())
    new = edit(folder, card)
    if new is not None:
        (folder / "model.json").write_text(new if isinstance(new, str) else json.dumps(new))
    return folder


def _set(key, value):
    def edit(_folder, card):
        if isinstance(key, tuple):
            card[key[0]][key[1]] = value
        else:
            card[key] = value
        return card
    return edit


def _flip_weights(folder, card):
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    return card


def _pickle(folder, card):
    (folder / "model.safetensors").unlink()
    (folder / "model.json").unlink()
    (folder / "model.pt").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    return None


MODEL_CASES = {
    "card is a JSON list": (lambda f, c: json.dumps([c]), "JSON list"),
    "card is a JSON string": (lambda f, c: json.dumps("model"), "JSON str"),
    "card is not JSON": (lambda f, c: "{not json", "unreadable model card"),
    "card missing": (lambda f, c: (f / "model.json").unlink(), "missing"),
    "card of another format": (_set("format", "onnx"), "not a DrasCLR model card"),
    "card from the future": (_set("format_version", 99), "version"),
    "unknown architecture": (_set("architecture", "ResNet9000"), "ResNet9000"),
    "architecture not a string": (_set("architecture", 5), "architecture"),
    "config is a list": (_set("config", [1, 2]), "config"),
    "config field of the wrong type": (_set(("config", "decoder"), "wide"), "config"),
    "config that does not match the weights": (_set(("config", "decoder"), [16, 8, 8, 8, 8]), "do not fit"),
    "absurd config (1e5 channels)": (_set(("config", "decoder"), [100000] * 5), "do not fit"),
    "weights changed after the card": (_flip_weights, "sha256"),
    "pickled checkpoint": (_pickle, "pickled|safetensors"),
    "classes of another model": (_set("classes", {"0": "outside", "1": "tumour"}), "classes"),
    "malformed decision weights": (_set("inference", {"class_weights": [1, -2]}), "class_weights"),
    "sha256 not a string": (_set("sha256", 12), "sha256"),
}


def test_malformed_models_are_refused_with_one_line(tmp_path, capsys, tiny_model):
    import resource

    ct = write_chest(tmp_path / "ct.nii.gz")
    code, _, err = run(capsys, "analyze", ct, "-o", tmp_path / "ok", "--model", tiny_model, "--no-tta", "--quiet")
    assert code == 0, err  # the intact tiny model works
    cases = {**MODEL_CASES, "model folder missing": (None, "not found")}
    for name, (edit, match) in cases.items():
        model = tmp_path / "nope" if edit is None else _broken_model(tmp_path / "models", tiny_model, name, edit)
        out = tmp_path / "out" / name.replace(" ", "_")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        refused(capsys, ["analyze", ct, "-o", out, "--model", model], out, match)
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 600 * 1024, name  # KiB on Linux


# --- pretrain -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--lr", "0"], "--lr"), (["--lr", "-1"], "--lr"), (["--lr", "nan"], "finite"),
    (["--temperature", "0"], "--temperature"), (["--moco-momentum", "1.5"], "--moco-momentum"),
    (["--epochs", "0"], "--epochs"), (["--max-minutes", "-1"], "--max-minutes"),
    (["--max-minutes", "inf"], "finite"), (["--workers", "-1"], "--workers"), (["--batch-size", "0"], "batch-size"),
    (["--channels", "0", "8", "16", "32", "64", "128", "128"], "--channels"), (["--k-neighbours", "0"], "k-neighbours"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_pretrain_bad_options(tmp_path, capsys, args, match):
    (tmp_path / "data").mkdir()
    out = tmp_path / "run"
    refused(capsys, ["pretrain", tmp_path / "data", "-o", out, *args], out, match)


def test_pretrain_never_silently_replaces_a_run(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(b"weights of an earlier run")
    refused(capsys, ["pretrain", tmp_path / "data", "-o", run_dir, "--max-steps", "1"], run_dir, "--overwrite")
    assert (run_dir / "model.safetensors").read_bytes() == b"weights of an earlier run"
    refused(capsys, ["pretrain", tmp_path / "missing", "-o", tmp_path / "r2"], tmp_path / "r2", "not found")
    # --overwrite sets the old run aside and restores it when the new run fails (here: no cases in the data)
    code, _, err = run(capsys, "pretrain", tmp_path / "data", "-o", run_dir, "--overwrite", "--max-steps", "1")
    assert code == 2 and "--overwrite" not in err, err
    assert (run_dir / "model.safetensors").read_bytes() == b"weights of an earlier run" and leftovers(tmp_path) == []
    # a folder holding only the caches of an earlier start is reused without --overwrite
    (tmp_path / "r3" / "cache").mkdir(parents=True)
    code, _, err = run(capsys, "pretrain", tmp_path / "data", "-o", tmp_path / "r3", "--max-steps", "1")
    assert code == 2 and "--overwrite" not in err and (tmp_path / "r3" / "cache").is_dir(), err


# --- finetune -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--steps", "0"], "--steps"), (["--batch-size", "0"], "--batch-size"), (["--lr", "0"], "--lr"),
    (["--val-fraction", "1.5"], "--val-fraction"), (["--label-fraction", "0"], "--label-fraction"),
    (["--max-minutes", "0"], "--max-minutes"), (["--patience", "-1"], "--patience"),
    (["--loss-weights", "1,1,1"], "loss-weights"), (["--encoder", "nowhere.safetensors"], "not found"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_finetune_cohort_bad_options(tmp_path, capsys, args, match):
    (tmp_path / "data").mkdir()
    out = tmp_path / "m-v1"
    refused(capsys, ["finetune", "cohort", "--data", tmp_path / "data", "-o", out, *args], out, match)


def test_finetune_output_folders(tmp_path, capsys, tiny_model):
    (tmp_path / "data").mkdir()
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("mine")
    for out, match in ((tiny_model, "never overwritten"), (notes, "--overwrite")):
        refused(capsys, ["finetune", "cohort", "--data", tmp_path / "data", "-o", out], None, match)
        refused(capsys, ["finetune", "calibrate", "--data", tmp_path / "data", "--model", tiny_model, "-o", out],
                None, match)
    assert (notes / "a.txt").read_text() == "mine" and (tiny_model / "model.safetensors").exists()
    # --overwrite: the folder is set aside and restored when the run fails (here: no labelled cases)
    code, _, err = run(capsys, "finetune", "cohort", "--data", tmp_path / "data", "-o", notes, "--overwrite")
    assert code == 2 and "no labelled cases" in err, err
    assert (notes / "a.txt").read_text() == "mine" and leftovers(tmp_path) == []
    refused(capsys, ["finetune", "cohort", "--data", tmp_path / "none", "-o", tmp_path / "x"], tmp_path / "x",
            "not found")


def test_finetune_corrections_bad_inputs(tmp_path, capsys, tiny_model):
    ct = write_chest(tmp_path / "ct.nii.gz")
    lab = small_chest().with_array(np.random.default_rng(0).integers(0, 5, small_chest().array.shape).astype(np.uint8))
    pred = write_image(lab, tmp_path / "pred.nii.gz")
    bad = truncated(pred, tmp_path / "corr_trunc.nii.gz")
    nan = lab.array.astype(np.float32)
    nan[3, 3, 3] = np.nan
    write_image(lab.with_array(nan), tmp_path / "corr_nan.mha")
    models_before = sorted(p.name for p in tiny_model.parent.iterdir())
    cases = {
        "--max-seconds 0": ([ct, pred, pred, "--max-seconds", "0"], "--max-seconds"),
        "--max-seconds -5": ([ct, pred, pred, "--max-seconds", "-5"], "--max-seconds"),
        "missing CT": ([tmp_path / "no.nii.gz", pred, pred], "not found"),
        "truncated corrections": ([ct, pred, bad], "truncated"),
        "NaN in corrections": ([ct, pred, tmp_path / "corr_nan.mha"], "NaN"),
    }
    for args, match in cases.values():
        refused(capsys, ["finetune", "corrections", *args, "--model", tiny_model], None, match)
    assert sorted(p.name for p in tiny_model.parent.iterdir()) == models_before  # no new version, nothing hidden


# --- evaluate / outcome -------------------------------------------------------------------------------------------
def test_evaluate_and_outcome_bad_inputs(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "metrics.json").write_text("{}")
    cases = {
        "evaluate: --pred missing": (["evaluate", "--pred", tmp_path / "no", "--truth", tmp_path / "empty"], None,
                                     "not found|no "),
        "evaluate: -o is a file": (["evaluate", "--pred", tmp_path / "empty", "--truth", tmp_path / "empty", "-o",
                                    tmp_path / "afile"], None, "not a folder"),
        "evaluate: -o not empty": (["evaluate", "--pred", tmp_path / "empty", "--truth", tmp_path / "empty", "-o",
                                    full], None, "--overwrite"),
        "outcome fit: --folds 1": (["outcome", "fit", "--features", tmp_path / "empty", "--outcomes", tmp_path /
                                    "empty", "-o", tmp_path / "m", "--folds", "1"], tmp_path / "m", "--folds"),
        "outcome fit: --penalizer nan": (["outcome", "fit", "--features", tmp_path / "empty", "--outcomes",
                                          tmp_path / "empty", "-o", tmp_path / "m", "--penalizer", "nan"],
                                         tmp_path / "m", "penalizer"),
        "outcome fit: -o exists": (["outcome", "fit", "--features", tmp_path / "empty", "--outcomes",
                                    tmp_path / "empty", "-o", full], None, "never overwritten"),
        "outcome fit: no features": (["outcome", "fit", "--features", tmp_path / "no", "--outcomes",
                                      tmp_path / "empty", "-o", tmp_path / "m"], tmp_path / "m", "not found"),
        "outcome predict: no model": (["outcome", "predict", "--model", tmp_path / "no", "--features",
                                       tmp_path / "empty", "-o", tmp_path / "p.csv"], tmp_path / "p.csv", "model"),
        "outcome predict: -o a folder": (["outcome", "predict", "--model", tmp_path / "no", "--features",
                                          tmp_path / "empty", "-o", full], None, "is a folder"),
    }
    for args, out, match in cases.values():
        refused(capsys, args, out, match)
    assert (full / "metrics.json").read_text() == "{}"


def test_cox_fit_that_does_not_converge_is_an_input_error():
    from drasclr.research.outcome import fit_cox

    x = np.stack([np.arange(8.0), 2 * np.arange(8.0)], axis=1)  # collinear
    with pytest.raises(InputError, match="did not converge"):
        fit_cox(x, np.arange(1.0, 9.0), np.ones(8), penalizer=0.0)
    with pytest.raises(InputError, match="did not converge"):
        fit_cox(np.ones((8, 1)), np.arange(1.0, 9.0), np.ones(8), penalizer=0.0)


# --- phantom ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, match", [
    (["--n", "0"], "--n"), (["--n", "-3"], "--n"), (["--workers", "0"], "--workers"), (["--seed", "-1"], "--seed"),
    (["--spacing", "50"], "spacing"), (["--spacing", "nan"], "finite"), (["--size", "8", "8", "8"], "too small"),
    (["--healthy-fraction", "2"], "healthy-fraction"), (["--severity", "0"], "severity"),
    (["--subtypes", ","], "subtypes"), (["--subtypes", "xyz"], "subtypes"), (["--noise", "-4"], "noise"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_phantom_bad_options(tmp_path, capsys, args, match):
    out = tmp_path / "ph"
    refused(capsys, ["phantom", "-o", out, *args], out, match)


def test_phantom_output_folders(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    refused(capsys, ["phantom", "-o", tmp_path / "afile"], None, "not a folder")
    refused(capsys, ["phantom", "-o", full], None, "--overwrite")
    assert (full / "keep.txt").read_text() == "mine"


# --- batch analysis -----------------------------------------------------------------------------------------------
def test_batch_partial_failure_exits_3_with_a_summary(tmp_path, capsys):
    src = tmp_path / "cohort"
    src.mkdir()
    write_chest(src / "good.nii.gz")
    truncated(write_chest(src / "x.nii.gz"), src / "broken.nii.gz")
    (src / "x.nii.gz").unlink()
    write_image(CTImage(np.full((16, 32, 32), -1000, np.int16)), src / "air.nii.gz")
    out = tmp_path / "res"
    code, stdout, err = run(capsys, "analyze", src, "-o", out, "--no-model")
    assert code == 3, err
    assert "1/3" in stdout and not [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert sorted(p.name for p in out.iterdir()) == ["failed_cases.csv", "good"]
    rows = list(csv.DictReader((out / "failed_cases.csv").open()))
    assert {r["case"]: r["reason"] for r in rows}.keys() == {"broken", "air"}
    assert "truncated" in next(r["reason"] for r in rows if r["case"] == "broken")
    # resumable: the folder holds only finished cases and our summary; a rerun skips 'good', fails the same two
    stamp = (out / "good" / "stats.json").stat().st_mtime_ns
    code, _, _ = run(capsys, "analyze", src, "-o", out, "--no-model")
    assert code == 3 and (out / "good" / "stats.json").stat().st_mtime_ns == stamp
    assert leftovers(out) == [] and leftovers(tmp_path) == []
    # a foreign file makes it not ours: refused without --overwrite
    (out / "notes.txt").write_text("mine")
    refused(capsys, ["analyze", src, "-o", out, "--no-model"], None, "--overwrite")
    # --overwrite re-analyses and replaces every case (the user's own file in the batch folder is left alone)
    code, _, _ = run(capsys, "analyze", src, "-o", out, "--no-model", "--overwrite")
    assert code == 3 and (out / "good" / "stats.json").stat().st_mtime_ns != stamp
    assert (out / "notes.txt").read_text() == "mine" and leftovers(out) == []


def test_batch_where_every_case_fails_writes_nothing(tmp_path, capsys):
    src = tmp_path / "cohort"
    src.mkdir()
    for name in ("a", "b"):
        write_image(CTImage(np.full((16, 32, 32), -1000, np.int16)), src / f"{name}.nii.gz")
    out = tmp_path / "res"
    refused(capsys, ["analyze", src, "-o", out, "--no-model"], out, "none of the 2 cases")
    (tmp_path / "list.txt").write_text("cohort/a.nii.gz\nmissing.nii.gz\n")
    refused(capsys, ["analyze", tmp_path / "list.txt", "-o", out, "--no-model"], out, "not found")


# --- signals ------------------------------------------------------------------------------------------------------
def _env():
    return {**os.environ, "PYTHONPATH": str(REPO / "DrasCLRSlicer"), "OMP_NUM_THREADS": "1"}


def _wait_for(pred, proc, timeout=120.0):
    t0 = time.time()
    while not pred():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_sigterm_removes_the_staged_folder(tmp_path):
    code = ("import sys, time; from drasclr.core.outputs import staged_dir, terminate_on_signals; "
            "terminate_on_signals(); "
            "t = staged_dir(sys.argv[1]); d = t.__enter__(); (d / 'half.txt').write_text('x')\n"
            "try:\n    print('staged', flush=True)\n    time.sleep(60)\n"
            "except BaseException:\n    t.__exit__(*sys.exc_info()); print('cleaned'); sys.exit(143)")
    target = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdout.readline().strip() == "staged"
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "cleaned" in out
    assert not target.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("command", ["phantom", "analyze"])
def test_sigterm_during_a_run_leaves_nothing(tmp_path, command):
    out = tmp_path / "out"
    if command == "phantom":
        args = ["phantom", "-o", out, "--n", "3", "--size", "64", "64", "48", "--spacing", "4", "--thickness", "5",
                "--workers", "1"]
        started = lambda: any(".out.tmp-" in p.name for p in tmp_path.iterdir())  # noqa: E731
    else:
        ct = write_chest(tmp_path / "ct.nii.gz")
        args = ["analyze", ct, "-o", out, "--no-model"]
        started = lambda: (tmp_path / ".out.lock").exists()  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "drasclr", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())
    _wait_for(started, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 143, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "SIGTERM" in errors[0], err
    assert not out.exists() and leftovers(tmp_path) == [], list(tmp_path.iterdir())
