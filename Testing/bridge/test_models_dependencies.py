"""Model store (import, versions, revert) and the dependency list the Slicer module installs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from DrasCLRSlicerLib import dependencies, models


def make_model(parent: Path, folder="drasclr-subtypes-v1", name="drasclr-subtypes", finetuned=False,
               good_sha=True) -> Path:
    """A model folder as the engine writes it (weights content is not parsed by the store)."""
    d = parent / folder
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(f"weights {folder}".encode())
    card = {"format": "drasclr-model", "name": name, "version": folder,
            "sha256": models.sha256(d / "model.safetensors") if good_sha else "0" * 64}
    if finetuned:
        card["parent"] = {"folder": "drasclr-subtypes-v1"}
    (d / "model.json").write_text(json.dumps(card))
    return d


def test_import_versions_and_revert(tmp_path):
    store = models.ModelStore(tmp_path / "user", bundled_root=tmp_path / "bundled")
    make_model(tmp_path / "bundled", "demo-v1", name="demo")
    assert [e.label for e in store.all()] == ["demo-v1 (bundled)"]
    first = store.import_model(make_model(tmp_path / "a"))
    assert first.path == tmp_path / "user" / "drasclr-subtypes-v1" and first.source == "imported"
    again = store.import_model(make_model(tmp_path / "b"))  # same folder name: gets the next version
    assert again.version == "drasclr-subtypes-v2"
    make_model(tmp_path / "user", "drasclr-subtypes-v3", finetuned=True)  # what fine-tuning writes
    assert [e.label for e in store.versions("drasclr-subtypes")] == [
        "drasclr-subtypes-v1 (imported)", "drasclr-subtypes-v2 (imported)", "drasclr-subtypes-v3 (fine-tuned)"]
    assert store.active("drasclr-subtypes").version == "drasclr-subtypes-v2"  # the last import made it active
    store.revert("drasclr-subtypes", "drasclr-subtypes-v1")
    assert store.active("drasclr-subtypes").version == "drasclr-subtypes-v1"
    assert store.find(tmp_path / "user" / "drasclr-subtypes-v3").source == "fine-tuned"
    with pytest.raises(KeyError):
        store.revert("drasclr-subtypes", "drasclr-subtypes-v9")


def test_import_refuses_bad_checksum_and_missing_card(tmp_path):
    store = models.ModelStore(tmp_path / "user", bundled_root=tmp_path / "none")
    with pytest.raises(ValueError, match="sha256"):
        store.import_model(make_model(tmp_path / "bad", good_sha=False))
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        store.import_model(lone)
    assert not (tmp_path / "user").exists() or not any((tmp_path / "user").iterdir())


def test_store_matches_the_engine_layout(tmp_path, monkeypatch):
    """A model saved by the engine is listed, imported, and loads back with the engine's loader."""
    store_mod = pytest.importorskip("drasclr.dense.store")
    from drasclr.dense.segmenter import SubtypeSegmenter

    monkeypatch.setenv("DRASCLR_MODELS", str(tmp_path / "user"))
    saved = store_mod.save_segmenter(SubtypeSegmenter(), tmp_path / "made" / "mine-v1",
                                     {"name": "mine", "version": "mine-v1"})
    store = models.ModelStore(bundled_root=tmp_path / "none")
    entry = store.import_model(saved)
    assert entry.path == tmp_path / "user" / "mine-v1"
    model, card, folder = store_mod.load_segmenter(entry.path)
    assert folder == entry.path and card["name"] == "mine"
    from drasclr.core.versions import next_version_dir

    assert next_version_dir(entry.path).name == "mine-v2"


def test_requirements_cover_the_engine_dependencies():
    """Every engine dependency in pyproject.toml is either installed on first use or provided by Slicer."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~; \[]", d, maxsplit=1)[0] for d in deps}
    listed = {dependencies.distribution_name(r) for r in dependencies.requirements()}
    assert names - set(dependencies.PROVIDED_BY_SLICER) == listed


def test_missing_reports_absent_modules():
    assert dependencies.missing(["scipy>=1.0", "surely-not-a-module-xyz>=1"]) == ["surely-not-a-module-xyz>=1"]


def test_default_selection_is_the_engines_default_family(tmp_path, monkeypatch):
    """Shells preselect the family of the model ``drasclr analyze`` uses without --model, whatever other families
    sort after it (a bundled ``demo-light`` sorts after ``demo``), and that family's active version."""
    store = models.ModelStore(tmp_path / "user", bundled_root=tmp_path / "bundled")
    default = make_model(tmp_path / "bundled", "demo-v5", name="demo")
    make_model(tmp_path / "bundled", "demo-light-v1", name="demo-light")
    monkeypatch.setenv("DRASCLR_MODEL", str(default))
    assert store.default().version == "demo-v5"
    make_model(tmp_path / "user", "demo-v6", name="demo", finetuned=True)  # a fine-tuned version: now the newest
    assert store.default().version == "demo-v6"
    monkeypatch.setenv("DRASCLR_MODEL", str(tmp_path / "elsewhere" / "x-v1"))  # not in the store: the last family
    assert store.default().name == "demo-light"
