"""Fine-tuning from a few corrections keeps what the model knew (knowledge preservation, issue #17).

On the bundled demo phantom with the bundled demo model, the annotator paints one small stroke of panlobular
emphysema (PLE) on one axial slice, on truth-PLE voxels the model called otherwise. The new model must learn the
stroke, and must not spread PLE over the untouched lung. The old recipe (corrected voxels plus as many unchanged
ones, class-balanced patches centred on the stroke, BatchNorm statistics updated) learnt the stroke but turned a
quarter of the untouched non-PLE lung in the box PLE within 6 steps.
"""

import json

import numpy as np
import pytest
import torch

from drasclr.anatomy.registration import register_to_atlas
from drasclr.core import labels
from drasclr.core.io import read_ct, read_image
from drasclr.dense.corrections import finetune_from_corrections
from drasclr.dense.infer import card_class_weights
from drasclr.dense.locate import locator_for
from drasclr.dense.predict import predict
from drasclr.dense.preserve import PreserveRecipe
from drasclr.dense.segmenter import SubtypeSegmenter
from drasclr.dense.store import load_segmenter, save_segmenter
from drasclr.research.phantom import demo_paths
from synthetic import synthetic_chest

CENTRE, HALF = np.array([41, 87, 62]), np.array([12, 14, 14])  # a box around the demo case's PLE (z, y, x)


def _predict(ct, lungs, model, card, locator):
    return predict(ct, lungs, model, "cpu", locator=locator, tta=False, class_weights=card_class_weights(card),
                   stride=32).subtypes


@pytest.fixture(scope="module")
def stroke(tmp_path_factory):
    ct = read_ct(demo_paths()["ct"])
    truth = read_image(demo_paths()["subtypes"]).array
    full = ct.with_array((truth > 0).astype(np.uint8))
    locator, _ = locator_for(full, register_to_atlas(full, iterations=30))
    box = np.zeros(truth.shape, bool)
    box[tuple(slice(c - h, c + h) for c, h in zip(CENTRE, HALF))] = True
    box &= truth > 0
    lungs = ct.with_array(box.astype(np.uint8))
    model, card, folder = load_segmenter(None)
    pred = _predict(ct, lungs, model, card, locator)
    missed = np.argwhere(box & (truth == labels.PLE) & (pred.array != labels.PLE))
    z = np.bincount(missed[:, 0]).argmax()  # the axial slice with the most missed PLE
    on_slice = missed[missed[:, 0] == z]
    seed = on_slice[len(on_slice) // 2]
    near = on_slice[(np.abs(on_slice[:, 1:] - seed[1:]) <= 4).all(1)]  # a 9 x 9 voxel brush
    stroke = np.zeros(truth.shape, bool)
    stroke[tuple(near.T)] = True
    corrected = pred.array.copy()
    corrected[stroke] = labels.PLE
    res = finetune_from_corrections(folder, ct, pred, ct.with_array(corrected), lungs, max_seconds=120,
                                    max_steps=12, out_root=tmp_path_factory.mktemp("stroke"), locator=locator)
    new, new_card, _ = load_segmenter(res.model_dir)
    after = _predict(ct, lungs, new, new_card, locator).array
    return truth, box, stroke, pred.array, after, res


def test_a_small_ple_stroke_is_learnt_without_spreading(stroke):
    truth, box, stroke_mask, before, after, res = stroke
    assert 20 <= stroke_mask.sum() <= 81 and (before[stroke_mask] != labels.PLE).all()
    assert (after[stroke_mask] == labels.PLE).mean() >= 0.4  # the corrected region is learnt
    assert res.after["accuracy"] >= res.before["accuracy"] + 0.4
    untouched = box & ~stroke_mask & (truth != labels.PLE)
    turned = (after[untouched] == labels.PLE) & (before[untouched] != labels.PLE)
    assert turned.mean() <= 0.06, f"{turned.mean():.1%} of the untouched non-PLE lung turned PLE"  # old: 25 %
    card = json.loads((res.model_dir / "model.json").read_text())["finetune"]
    assert card["recipe"]["kind"] == "knowledge-preserving" and card["guard"][0]["step"] == 0


def test_the_guard_keeps_the_parent_when_agreement_cannot_hold(tmp_path):
    ct, truth = synthetic_chest(shape=(24, 48, 48), spacing=(4.0, 4.0, 5.0))
    torch.manual_seed(0)
    tiny = SubtypeSegmenter(encoder={"channels": [4, 4, 4, 8, 8, 8, 8], "num_experts": 2, "in_channels": 1},
                            decoder=(8, 8, 8, 4, 4))
    parent = save_segmenter(tiny, tmp_path / "t-v1", {"name": "t", "version": "t-v1"})
    pred = ct.with_array(np.where(truth > 0, labels.NORMAL, 0).astype(np.uint8))
    corrected = pred.array.copy()
    corrected[truth == labels.LEFT_LUNG] = labels.CLE
    res = finetune_from_corrections(parent, ct, pred, pred.with_array(corrected), max_steps=4, max_seconds=60,
                                    recipe=PreserveRecipe(min_agreement=1.01, lr=1e-2, warmup=1))
    card = json.loads((res.model_dir / "model.json").read_text())["finetune"]
    assert card["stopped_by_guard"] and card["kept_step"] == 0 and card["steps"] == 2
    old, new = load_segmenter(parent)[0].state_dict(), load_segmenter(res.model_dir)[0].state_dict()
    assert all(torch.equal(old[k], new[k]) for k in old)  # the parent's weights, unchanged
