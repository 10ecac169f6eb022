"""DrasCLR engine: anatomy-conditioned self-supervised learning and emphysema-subtype analysis of chest CT.

The engine never imports slicer, qt, ctk or vtk; the Slicer module and its MRML bridge sit on top of it.
``drasclr.CTImage`` is imported on first use (PEP 562), so that ``drasclr --help`` and argument errors do not
load SimpleITK, numpy or torch.
"""

__version__ = "0.1.0"

from pathlib import Path  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"  # shipped data: models, atlas, demo CT

from .core.errors import InputError  # noqa: E402,F401


def __getattr__(name):
    if name == "CTImage":
        from .core.image import CTImage

        return CTImage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the engine's layout, and its old import paths --------------------------------------------------------------
# core/      image, io and its input-file checks, labels, names, settings, errors, outputs, progress, device, versions,
#            intensity, distributed, threads (per-voxel work on the analysis' threads), memory (huge-page arrays)
# checks/    resolution guard, lung plausibility
# anatomy/   HU calibration (air, trachea, blood), lungs, registration, coords, atlas, lobes, regions, adapters
# model/     the DrasCLR network (CondConv encoder, heads), model files, training-state checkpoints
# dense/     subtype segmentation: prediction, uncertainty, density rule, fine-tuning from corrections, cohorts
# pretrain/  self-supervised pretraining (DrasCLR, VoCo, volume fusion)
# reference/ cip-lh, the local-histogram classifier trained on real expert labels
# acquisition/ kernel and dose: harmonization before the model, perturbations for the acquisition bench
# analysis/  analyze, statistics, review queue, report, the model an analysis loads
# research/  evaluation, outcome models, phantoms
# cli/       the command line (parsing; each command calls the packages above)
# Model cards, scripts and users name the old flat modules (``drasclr.analyze``, ``drasclr.phantom``, ...): they
# stay importable as the very same module objects (an alias, not a copy), so monkeypatching either name works.
import importlib  # noqa: E402  (the alias finder must not import while it is looking for a module)
import importlib.util  # noqa: E402
import sys  # noqa: E402

_MOVED = {
    "errors": "core.errors",
    "image": "core.image",
    "io": "core.io",
    "labels": "core.labels",
    "names": "core.names",
    "settings": "core.settings",
    "outputs": "core.outputs",
    "progress": "core.progress",
    "device": "core.device",
    "versions": "core.versions",
    "architecture": "core.architecture",
    "distributed": "core.distributed",
    "intensity": "core.intensity",
    "validate": "core.input_files",
    "guard": "checks.resolution",
    "calibration": "anatomy.hu_calibration",
    "pretrain.checkpoint": "model.train_state",
    "harmonize": "acquisition.harmonize",
    "perturb": "acquisition.perturb",
    "lung_checks": "checks.lung_checks",
    "lungs": "anatomy.lungs",
    "registration": "anatomy.registration",
    "coords": "anatomy.coords",
    "regions": "anatomy.regions",
    "atlas": "anatomy.atlas",
    "lobes": "anatomy.lobes",
    "adapters": "anatomy.adapters",
    "analyze": "analysis.analyze",
    "stats": "analysis.stats",
    "review": "analysis.review",
    "report": "analysis.report",
    "loaded_model": "analysis.loaded_model",
    "evaluate": "research.evaluate",
    "outcome": "research.outcome",
    "phantom": "research.phantom",
}


class _AliasFinder:
    """``import drasclr.<old>`` finds the moved module ``drasclr.<new>`` (and its submodules)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        prefix = __name__ + "."
        if not name.startswith(prefix):
            return None
        rest = name[len(prefix):]
        for old, new in _MOVED.items():
            if rest == old or rest.startswith(old + "."):
                return importlib.util.spec_from_loader(name, _AliasLoader(prefix + new + rest[len(old):]))
        return None


class _AliasLoader:
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module):
        pass


def _install_aliases() -> None:
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())  # before the path finder: an old name never loads a second copy


_install_aliases()
