"""Model store (import, versions, revert) and the dependency list the Slicer module installs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from DrasCLRSlicerLib import dependencies, models


def make_model(folder: Path, name="drasclr-subtypes", version="1.0", parent=None, good_sha=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"{name}-{version}.safetensors"
    weights.write_bytes(f"weights {name} {version}".encode())  # content is not parsed by the store
    card = {"name": name, "version": version, "sha256": models.sha256(weights) if good_sha else "0" * 64}
    if parent:
        card["parent"] = parent
    weights.with_suffix(".json").write_text(json.dumps(card))
    return weights


def test_import_versions_and_revert(tmp_path):
    store = models.ModelStore(tmp_path / "store", bundled_dir=tmp_path / "none")
    assert store.all() == []
    first = store.import_model(make_model(tmp_path / "a"))
    assert first.source == "imported" and first.path.parent == tmp_path / "store" / "drasclr-subtypes" / "1.0"
    tuned = store.import_model(make_model(tmp_path / "b", version="1.1", parent="1.0"))
    assert tuned.source == "fine-tuned"
    assert [e.version for e in store.versions("drasclr-subtypes")] == ["1.0", "1.1"]
    assert store.active("drasclr-subtypes").version == "1.1"
    store.revert("drasclr-subtypes", "1.0")
    assert store.active("drasclr-subtypes").version == "1.0"
    assert [e.label for e in store.all()] == ["drasclr-subtypes 1.0 (imported)"]
    with pytest.raises(KeyError):
        store.revert("drasclr-subtypes", "9.9")
    with pytest.raises(FileExistsError):
        store.import_model(make_model(tmp_path / "c"))


def test_import_refuses_bad_checksum_and_missing_card(tmp_path):
    store = models.ModelStore(tmp_path / "store", bundled_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="sha256"):
        store.import_model(make_model(tmp_path / "bad", good_sha=False))
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        store.import_model(lone)
    assert not (tmp_path / "store").exists()


def test_bundled_models_are_listed(tmp_path):
    make_model(tmp_path / "data" / "models", name="demo", version="0.1")
    store = models.ModelStore(tmp_path / "store", bundled_dir=tmp_path / "data")
    assert [e.label for e in store.all()] == ["demo 0.1 (bundled)"]


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
