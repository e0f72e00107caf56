import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vla.data import EpisodeStore
from vla.data.sampler import WindowDataset, collate_windows
from vla.spec import ACTION, ACTION_IS_PAD, STATE, SpecError, image_key

from helpers import fill, tiny_embodiment


@pytest.fixture
def store(tmp_path, emb):
    s = EpisodeStore.create(tmp_path / "s", [emb])
    fill(s, emb, 3, lambda e: 5 + e)  # lengths 5, 6, 7
    return s


def test_window_contents_and_end_padding(store):
    ds = WindowDataset(store.path, horizon=4)
    assert len(ds) == 5 + 6 + 7
    # Episode 1 (length 6), frame 4: actions 4, 5, then the last action repeated twice as padding.
    w = ds[5 + 4]
    assert w["task"] == "do 1" and w["embodiment"] == "tiny"
    np.testing.assert_array_equal(w[STATE][:2], [1, 4])
    np.testing.assert_array_equal(w[ACTION][:, 0], [1004, 1005, 1005, 1005])
    np.testing.assert_array_equal(w[ACTION_IS_PAD], [False, False, True, True])
    img = w[image_key("front")]
    assert img.shape == (8, 10, 3) and img[0, 0, 0] == 1 and img[0, 0, 1] == 4


def test_history_repeats_first_frame(store):
    ds = WindowDataset(store.path, horizon=2, history=2)
    w = ds[1]  # episode 0, frame 1: obs frames -1 (pad -> 0), 0, 1
    np.testing.assert_array_equal(w["obs_is_pad"], [True, False, False])
    np.testing.assert_array_equal(w[STATE][:, 1], [0, 0, 1])
    np.testing.assert_array_equal(w[image_key("front")][:, 0, 0, 1], [0, 0, 1])


def test_batched_reads_equal_single_reads(store):
    ds = WindowDataset(store.path, horizon=3)
    idx = [17, 0, 9, 9, 4]
    batch = ds.__getitems__(idx)
    for i, b in zip(idx, batch):
        single = ds[i]
        for k in (STATE, ACTION, image_key("front")):
            np.testing.assert_array_equal(b[k], single[k])


def test_dataloader_with_two_workers(store):
    ds = WindowDataset(store.path, horizon=4)
    dl = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, collate_fn=collate_windows)
    batches = list(dl)
    states = torch.cat([b[STATE] for b in batches])
    assert states.shape == (18, 3)
    np.testing.assert_array_equal(states[:, 0].numpy(), [0] * 5 + [1] * 6 + [2] * 7)
    assert batches[0][image_key("front")].dtype == torch.uint8


def test_mixture_weights_pick_stores(tmp_path, emb):
    a = EpisodeStore.create(tmp_path / "a", [emb])
    fill(a, emb, 1, 50)
    b = EpisodeStore.create(tmp_path / "b", [emb])
    fill(b, emb, 4, 50, start_ep=10)
    ds = WindowDataset([a.path, b.path], horizon=2, weights=[3, 1], images=False)
    picks = np.array([ds[int(i)][STATE][0] for i in ds.sampler(4000, seed=0)])
    frac_a = (picks == 0).mean()
    assert 0.72 < frac_a < 0.78  # 3:1 although store b has 4x the frames
    with pytest.raises(SpecError, match="expected 2"):
        WindowDataset([a.path, b.path], horizon=2, weights=[1])


def test_collate_pads_mixed_embodiments(tmp_path):
    small = tiny_embodiment("small", s=2, a=2, cams=(("front", 8, 10),))
    big = tiny_embodiment("big", s=4, a=3, cams=(("front", 8, 10), ("wrist", 4, 4)))
    s = EpisodeStore.create(tmp_path / "s", [small, big])
    fill(s, small, 1, 3)
    fill(s, big, 1, 3, start_ep=1)
    ds = WindowDataset(s.path, horizon=2)
    batch = collate_windows(ds.__getitems__([0, 3]))
    assert batch[STATE].shape == (2, 4) and batch[ACTION].shape == (2, 2, 3)
    np.testing.assert_array_equal(batch["state_dim_is_pad"].numpy(), [[0, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(batch["action_dim_is_pad"].numpy(), [[0, 0, 1], [0, 0, 0]])
    assert batch[STATE][0, 2:].abs().sum() == 0
    np.testing.assert_array_equal(batch["image_mask/wrist"].numpy(), [False, True])
    assert batch[image_key("wrist")][0].sum() == 0
