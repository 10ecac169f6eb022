"""DrasCLREncoder shapes and parameter count; safetensors model files with cards and clear refusals."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from drasclr.core.errors import InputError
from drasclr.model import DrasCLREncoder, PlainEncoder, ProjectionHead, load_model, read_card, save_model

TINY = (2, 2, 4, 4, 8, 8, 8)


def test_published_layer_list_shapes_and_size():
    enc = DrasCLREncoder().eval()
    x, loc = torch.randn(2, 1, 32, 32, 32), torch.rand(2, 3) * 2 - 1
    with torch.no_grad():
        feats = enc.forward_features(x, loc)
        h = enc(x, loc)
    assert [tuple(f.shape[1:]) for f in feats] == [(8, 32, 32, 32), (8, 16, 16, 16), (16, 8, 8, 8), (32, 4, 4, 4),
                                                   (64, 2, 2, 2), (128, 2, 2, 2), (128, 1, 1, 1)]
    assert h.shape == (2, 128) and torch.allclose(h, feats[-1].flatten(1))
    n = sum(p.numel() for p in enc.parameters()) + sum(p.numel() for p in ProjectionHead().parameters())
    assert 8.1e6 < n < 8.4e6  # "about 8.3 M parameters"
    assert sum(1 for m in enc.modules() if type(m).__name__ == "CondConv3d") == 13


def test_bad_shapes_are_refused():
    enc = DrasCLREncoder(TINY)
    with pytest.raises(ValueError, match="loc must be"):
        enc(torch.zeros(2, 1, 32, 32, 32), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="x must be"):
        enc(torch.zeros(2, 32, 32, 32), torch.zeros(2, 3))


def test_save_load_roundtrip_identical_outputs(tmp_path):
    torch.manual_seed(0)
    enc = DrasCLREncoder(TINY, num_experts=4)
    enc.train()(torch.randn(4, 1, 32, 32, 32), torch.rand(4, 3))  # move BN running stats off their defaults
    enc.eval()
    path = save_model(enc, tmp_path / "m" / "model.safetensors", {"classes": ["a"], "note": "test"})
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["architecture"] == "DrasCLREncoder" and card["note"] == "test" and len(card["sha256"]) == 64
    loaded, card2 = load_model(tmp_path / "m")  # the folder works too
    assert card2 == card and read_card(path) == card
    x, loc = torch.randn(3, 1, 32, 32, 32), torch.rand(3, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x, loc), enc(x, loc))
    assert not loaded.training


def test_foreign_architecture_version_and_corruption_are_refused(tmp_path):
    path = save_model(DrasCLREncoder(TINY), tmp_path / "model.safetensors")
    with pytest.raises(InputError, match="PlainEncoder is needed"):
        load_model(path, expect=PlainEncoder)
    card = json.loads((tmp_path / "model.json").read_text())
    # a card whose config promises another width: shapes do not fit
    wrong = dict(card, config=dict(card["config"], channels=[2, 2, 4, 4, 8, 8, 16]))
    (tmp_path / "model.json").write_text(json.dumps(wrong))
    with pytest.raises(InputError, match="do not fit architecture"):
        load_model(path)
    (tmp_path / "model.json").write_text(json.dumps(dict(card, format_version=99)))
    with pytest.raises(InputError, match="format version 99"):
        load_model(path)
    (tmp_path / "model.json").write_text(json.dumps(card))
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_model(path)
    (tmp_path / "model.json").unlink()
    with pytest.raises(InputError, match="card"):
        load_model(path)


def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(InputError, match="pickled"):
        load_model(bad)
    pt = tmp_path / "enc.pt"
    torch.save(DrasCLREncoder(TINY).state_dict(), pt)
    with pytest.raises(InputError, match="pickled"):
        load_model(pt)


def test_plain_encoder_ignores_location():
    enc = PlainEncoder(TINY).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc(x, torch.zeros(2, 3)), enc(x, torch.ones(2, 3)))
    assert not any(type(m).__name__ == "CondConv3d" for m in enc.modules())
