"""Write a subtype model as a MONAI bundle folder.

``configs/metadata.json`` (MONAI's metadata schema), ``configs/inference.json`` (run with
``python -m monai.bundle run --config_file configs/inference.json``), ``models/model.safetensors`` + ``model.json``
(the weights and card, loaded by the config), ``models/model.pt`` (the same weights as a plain state dict, the file
MONAI's bundle specification names; written by us, loadable with ``weights_only=True``), ``docs/README.md`` and
``LICENSE``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .. import __version__
from ..core.errors import InputError

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
DOCS = Path(__file__).resolve().parent / "README.bundle.md"
LICENSE = """Code and configuration: Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0), DrasCLRSlicer
contributors. Model weights: the same licence; they were trained on synthetic phantoms and on data whose own terms
travel with the model card (models/model.json). Research use only; not a medical device.

Training data recorded in the model card:
{notes}
"""


def inference_config(card: dict) -> dict:
    """``configs/inference.json``: MONAI config syntax; every step a MONAI transform or expression."""
    cfg = card.get("config", {})
    return {
        "imports": ["$import glob", "$import json", "$import torch", "$from safetensors.torch import load_file",
                    "$import drasclr.bundle.transforms"],
        "bundle_root": ".",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "dataset_dir": "$@bundle_root + '/sample'",
        "datalist": "$[{'image': f} for f in sorted(glob.glob(@dataset_dir + '/*.nii*'))]",
        "output_dir": "$@bundle_root + '/eval'",
        "tta": True,
        "hu_calibration": "auto",
        "card": "$json.load(open(@bundle_root + '/models/model.json'))",
        "network_def": {"_target_": "drasclr.dense.segmenter.SubtypeSegmenter", "encoder": cfg.get("encoder"),
                        "decoder": cfg.get("decoder"), "num_classes": cfg.get("num_classes", 5),
                        **{k: cfg[k] for k in ("encoder_arch", "full_res_kernel") if k in cfg}},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "drasclr.bundle.transforms.LoadCTd", "keys": "image"},
            {"_target_": "drasclr.bundle.transforms.LungMaskd", "keys": "image",
             "hu_calibration": "@hu_calibration"},
            {"_target_": "drasclr.bundle.transforms.AtlasLocatord", "keys": "lungs"}]},
        "inferer": {"_target_": "drasclr.bundle.transforms.SubtypeInferer", "tta": "@tta",
                    "class_weights": "$(@card.get('inference') or {}).get('class_weights')"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "drasclr.bundle.transforms.DensityVetod", "card": "@card"},
            {"_target_": "drasclr.bundle.transforms.SaveSubtypesd", "output_dir": "@output_dir"}]},
        "initialize": ["$@network.load_state_dict(load_file(@bundle_root + "
                       "'/models/model.safetensors', device=str(@device)))", "$@network.float().eval()"],
        "run": ["$[@postprocessing(@inferer(@preprocessing(d), @network, @device)) for d in @datalist]"],
    }


def metadata(card: dict) -> dict:
    import monai
    import numpy
    import torch

    classes = {str(k): v for k, v in card.get("classes", {}).items()}
    return {
        "schema": SCHEMA,
        "version": "1.0.0",
        "changelog": {"1.0.0": f"DrasCLR model {card.get('version', card.get('name'))} exported by drasclr "
                               f"{__version__}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "optional_packages_version": {"drasclr": __version__, "SimpleITK": _version("SimpleITK"),
                                      "safetensors": _version("safetensors")},
        "name": f"DrasCLR emphysema subtypes ({card.get('version', card.get('name'))})",
        "task": "Emphysema subtype segmentation of chest CT (normal, centrilobular, paraseptal, panlobular)",
        "description": "Anatomy-conditioned (DrasCLR) 3D network predicting emphysema subtypes voxel by voxel inside "
                       "the lungs; each 32 mm patch is conditioned on its normalised atlas location. See "
                       "docs/README.md.",
        "authors": "DrasCLRSlicer contributors", "copyright": "DrasCLRSlicer contributors, Apache-2.0",
        "intended_use": "Research only; not for clinical use.",
        "data_source": json.dumps(card.get("training", card.get("training_data", "see model card")))[:500],
        "data_type": "nifti, nrrd, mha or a DICOM series folder",
        "image_classes": "one channel chest CT in Hounsfield units",
        "label_classes": ", ".join(f"{k}: {v}" for k, v in classes.items()),
        "pred_classes": ", ".join(f"{k}: {v}" for k, v in classes.items()),
        "eval_metrics": {k: v for k, v in (card.get("inference") or {}).items() if k.startswith("val_volume_macro")},
        "references": ["Yu K., Sun L., Chen J., Reynolds M., Chaudhary T., Batmanghelich K. DrasCLR: A "
                       "self-supervised framework of learning disease-related and anatomy-specific representation "
                       "for 3D medical images. 2023."],
        "network_data_format": {
            "inputs": {
                "image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                          "spatial_shape": [32, 32, 32], "dtype": "float32", "value_range": [-1024, 240],
                          "is_patch_data": True, "channel_def": {"0": "image"}},
                "location": {"type": "tuple", "format": "normalised atlas coordinates (z, y, x) of the patch "
                                                        "centre, from an affine registration of the lung mask",
                             "num_channels": 3, "spatial_shape": [3], "dtype": "float32", "value_range": [-1, 1],
                             "is_patch_data": True, "channel_def": {"0": "z", "1": "y", "2": "x"}}},
            "outputs": {
                "pred": {"type": "image", "format": "segmentation", "num_channels": 5, "spatial_shape": [32, 32, 32],
                         "dtype": "float32", "value_range": [0, 1], "is_patch_data": True,
                         "channel_def": classes}}},
    }


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def export_bundle(model: str | None, out: str | Path) -> Path:
    """Write the bundle of ``model`` (folder, file or name; None: the default model) into ``out`` (refused when it
    exists and is not empty)."""
    import torch
    from safetensors.torch import load_file

    from ..core.outputs import staged_dir
    from ..core.versions import default_model, resolve_model
    from ..dense.segmenter import SubtypeSegmenter
    from ..model import read_card
    from ..model.checkpoint import card_path

    path = resolve_model(model) if model else default_model()
    if not path.exists():
        raise InputError(f"model not found: {path}")
    card = read_card(path)
    if card.get("architecture") != SubtypeSegmenter.architecture:
        raise InputError(f"{path.name}: a MONAI bundle is exported from a subtype segmenter (architecture "
                         f"{SubtypeSegmenter.architecture}), not {card.get('architecture') or 'this model'}")
    weights = path / "model.safetensors" if path.is_dir() else path
    with staged_dir(out) as tmp:
        for sub in ("configs", "models", "docs"):
            (tmp / sub).mkdir()
        (tmp / "configs" / "metadata.json").write_text(json.dumps(metadata(card), indent=2))
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference_config(card), indent=2))
        shutil.copyfile(weights, tmp / "models" / "model.safetensors")
        shutil.copyfile(card_path(weights), tmp / "models" / "model.json")
        torch.save({k: v.float() for k, v in load_file(str(weights)).items()}, tmp / "models" / "model.pt")
        shutil.copyfile(DOCS, tmp / "docs" / "README.md")
        (tmp / "LICENSE").write_text(LICENSE.format(notes=json.dumps(card.get("training", "see models/model.json"),
                                                                     indent=1)[:2000]))
    return Path(out)
