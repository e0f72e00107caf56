"""Instruction-conditioned spatial-softmax keypoints (vla.model.grounding.keypoints) and their grounding path."""

import pytest
import torch

from vla.model.grounding.keypoints import Keypoints, spatial_softmax
from vla.model.grounding.tokens import GroundingConfig
from vla.model.pi0.model import Pi0Model
from vla.spec import SpecError

from model.tiny_configs import tiny_pi0


def test_spatial_softmax_finds_the_spot():
    logits = torch.zeros(2, 5, 7)
    logits[0, 1, 6] = 50.0  # row 1 of 5, last column
    logits[1, 4, 0] = 50.0  # bottom row, first column
    x, y, peak = spatial_softmax(logits)
    assert torch.allclose(x, torch.tensor([1.0, -1.0]), atol=1e-4)
    assert torch.allclose(y, torch.tensor([-0.5, 1.0]), atol=1e-4)
    flat = spatial_softmax(torch.zeros(1, 5, 7))
    assert flat[0].abs().item() < 1e-6 and flat[1].abs().item() < 1e-6 and flat[2].abs().item() < 1e-6
    assert (peak > 40).all()


def test_absent_cameras_are_zero_and_the_instruction_conditions_the_maps():
    torch.manual_seed(0)
    kp = Keypoints(cond_width=16, keypoints=3)
    images = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    mask = torch.tensor([[True, False], [True, True]])
    cond = torch.randn(2, 16)
    out = kp(images, mask, cond)
    assert out.shape == (2, kp.out_dim(2)) == (2, 18)
    assert torch.equal(out[0, 9:], torch.zeros(9)) and out[1, 9:].abs().sum() > 0
    # FiLM starts at zero: at first every instruction gives the same keypoints; once it has
    # weights, the instruction changes where the maps fire.
    assert torch.equal(kp(images, mask, -cond), out)
    with torch.no_grad():
        kp.film.weight.normal_(0, 1.0)
    assert not torch.allclose(kp(images, mask, -cond), kp(images, mask, cond))


def _scene(n: int, gen: torch.Generator, size: int = 32):
    """Images with a red and a green 4x4 square at random places; cond picks which colour is the
    target; the target's centre in [-1, 1] is what a localizer must say."""
    images = torch.full((n, 1, 3, size, size), -1.0)
    which = torch.randint(0, 2, (n,), generator=gen)
    target = torch.zeros(n, 2)
    for i in range(n):
        spots = torch.randint(0, size - 4, (2, 2), generator=gen)
        while (spots[0] - spots[1]).abs().max() < 5:
            spots = torch.randint(0, size - 4, (2, 2), generator=gen)
        for colour, (r, c) in enumerate(spots.tolist()):
            images[i, 0, colour, r : r + 4, c : c + 4] = 1.0
        r, c = spots[which[i]].tolist()
        target[i] = torch.tensor([c + 1.5, r + 1.5]) / (size - 1) * 2 - 1
    return images, torch.nn.functional.one_hot(which, 2).float(), target


def test_keypoints_learn_to_find_the_named_colour_in_new_layouts():
    """The reason for the stem: trained on a few layouts it localizes in layouts it never saw."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    kp = Keypoints(cond_width=2, keypoints=2, channels=16)
    head = torch.nn.Linear(kp.out_dim(1), 2)
    opt = torch.optim.Adam([*kp.parameters(), *head.parameters()], lr=1e-2)
    train = _scene(64, gen)
    mask = torch.ones(64, 1, dtype=torch.bool)
    for _ in range(200):
        loss = ((head(kp(train[0], mask, train[1])) - train[2]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    test = _scene(64, gen)
    with torch.no_grad():
        err = (head(kp(test[0], mask, test[1])) - test[2]).norm(dim=-1).mean().item()
    guess = (test[2] - train[2].mean(0)).norm(dim=-1).mean().item()
    assert err < 0.2 * guess, (err, guess)


def test_pi0_with_keypoints_reads_the_pixels_and_any_embodiment():
    with pytest.raises(SpecError, match="keypoints must be an int >= 0, got -1"):
        GroundingConfig(tokens=2, keypoints=-1)
    torch.manual_seed(0)
    cfg = tiny_pi0(grounding=GroundingConfig(tokens=2, env_state_loss=1.0, keypoints=3))
    m = Pi0Model(cfg, 64)
    batch = cfg.example_batch(2, vocab_size=64)
    with torch.no_grad():  # the keypoint path alone (the image tokens unchanged) moves the tokens
        m.grounding.keypoints.maps.weight.normal_(0, 1.0)
        g = m.observe(batch)[1]
        shifted = batch["images"].roll(5, dims=-1)
        alone = m.grounding(
            *_split(m, batch), pixels=shifted, pixel_mask=batch["image_mask"], embodiment=_index(m, batch)
        )
        assert not torch.allclose(alone, g)
        other = m.observe(dict(batch, embodiment=["not-in-the-config"] * 2))[1]
        assert other.shape == g.shape and not torch.allclose(other, g)
    loss = m.compute_loss({**batch, "env_state": torch.randn(2, 6), "env_state_valid": torch.tensor([True, True])})
    loss.mean().backward()
    assert m.grounding.keypoints.stem[0].weight.grad.abs().sum() > 0


def _split(m, batch):
    p = m.backbone.embed_prefix(batch["images"], batch["image_mask"], batch["tokens"], batch["token_mask"])
    n = p.embeds.shape[1] - batch["tokens"].shape[1]
    return p.embeds[:, :n], p.valid[:, :n], p.embeds[:, n:], batch["token_mask"]


def _index(m, batch):
    return m._embodiment_index(batch["embodiment"], batch["images"].device)
