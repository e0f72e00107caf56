import pytest
import torch

from vla.config import load_preset
from vla.spec import SpecError
from vla.train.augment import random_shift
from vla.train.trainer import TrainConfig, train

from train.conftest import write_preset


def test_random_shift_moves_each_image_within_pad():
    g = torch.Generator().manual_seed(0)
    img = torch.zeros(4, 2, 3, 16, 16)
    img[..., 8, 8] = 1.0  # one bright pixel per image
    out = random_shift(img, 2, g)
    assert out.shape == img.shape
    spots = [(o[0] == 1).nonzero()[0].tolist() for o in out.flatten(0, 1)]
    assert all(6 <= y <= 10 and 6 <= x <= 10 for y, x in spots)
    assert len({tuple(s) for s in spots}) > 1  # not one shift for all
    assert torch.equal(random_shift(img, 0, g), img)


def test_ranks_shift_their_rows_as_one_process_would():
    img = torch.randn(4, 2, 3, 8, 8)
    one = random_shift(img, 2, torch.Generator().manual_seed(3))
    parts = [random_shift(img[r::2], 2, torch.Generator().manual_seed(3), rank=r, world=2) for r in range(2)]
    assert torch.equal(parts[0], one[0::2]) and torch.equal(parts[1], one[1::2])


def test_image_shift_is_checked_and_resumes_exactly(tmp_path, two_stores):
    with pytest.raises(SpecError, match="image_shift"):
        TrainConfig(image_shift=-1)
    text = write_preset(tmp_path / "p.toml").read_text().replace("[train]\n", "[train]\nimage_shift = 2\n")
    (tmp_path / "s.toml").write_text(text)
    preset = load_preset(tmp_path / "s.toml")
    full = train(preset, two_stores, tmp_path / "full", steps=4, progress=False)
    train(preset, two_stores, tmp_path / "part", steps=2, progress=False)
    resumed = train(preset, two_stores, tmp_path / "part", steps=4, resume=True, progress=False)
    a = torch.load(full / "train_state.pt", weights_only=False)["model"]
    b = torch.load(resumed / "train_state.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(load_preset(write_preset(tmp_path / "q.toml")), two_stores, tmp_path / "plain", steps=4,
                  progress=False)  # fmt: skip
    c = torch.load(plain / "train_state.pt", weights_only=False)["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the shift changed what was trained
