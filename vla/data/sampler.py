"""Training windows over one or several episode stores.

A window at frame t of an episode holds the observation at t (plus `history` earlier frames,
repeated from the episode's first frame where they fall before it) and the next `horizon`
actions a[t:t+h]; past the episode's end the last action repeats and `action_is_pad` is True.

Low-dim arrays (state, action) of the chosen episodes are loaded into memory once (they are
small); images are read per batch straight from the cameras' shard files (one pread per frame),
which is what makes this loader fast (see `vla bench data`).

image_size=(h, w): frames arrive at the model's input size, resized in the DataLoader workers
by the rule of vla.data.resize (aspect kept, padded with black, as openpi's resize_with_pad and
vla.model.transforms); JPEG cameras are decoded at the smallest k/8 scale that is still at least
that size, which is most of the speed on camera data.

Sample keys (history = 0):
    observation/images/<cam>  uint8 [H, W, 3]      observation/state  float32 [s]
    action  float32 [h, a]     action_is_pad  bool [h]     task  str     embodiment  str
With history k > 0 the observation keys get a leading time dim of k+1 and `obs_is_pad` [k+1].
When any chosen episode's store has ENV_STATE (training-only scene facts), every window also gets
    observation/environment_state  float32 [d] at frame t only (never history); NaN where unknown
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from vla.data.frame_files import CorruptFrameError, StoreError
from vla.data.resize import parse_size
from vla.data.store import EpisodeStore
from vla.spec import ACTION, ACTION_IS_PAD, EMBODIMENT, ENV_STATE, IMAGE_PREFIX, STATE, TASK, SpecError, image_key

log = logging.getLogger(__name__)

CORRUPT = "corrupt_skipped"  # sample key (skip_corrupt): 1 when this window stands in for a corrupt one
SUBSTITUTE_TRIES = 8  # windows tried in place of a corrupt one before the store is called broken


class WindowDataset(Dataset):
    """skip_corrupt: a window with a corrupt frame is logged and replaced by another window (marked
    with CORRUPT: 1), rather than stopping the loader; the trainer counts and caps these."""

    def __init__(
        self,
        stores: Sequence[str | EpisodeStore] | str | EpisodeStore,
        horizon: int,
        *,
        history: int = 0,
        weights: Sequence[float] | None = None,
        embodiments: Sequence[str] | None = None,
        images: bool = True,
        image_size: int | tuple[int, int] | None = None,
        skip_corrupt: bool = False,
    ):
        if horizon < 1:
            raise SpecError(f"horizon must be >= 1, got {horizon}")
        if history < 0:
            raise SpecError(f"history must be >= 0, got {history}")
        if isinstance(stores, (str, EpisodeStore)):
            stores = [stores]
        self.paths = [s.path if isinstance(s, EpisodeStore) else str(s) for s in stores]
        if not self.paths:
            raise SpecError("WindowDataset needs at least one store")
        if weights is not None and len(weights) != len(self.paths):
            raise SpecError(f"mixture weights: expected {len(self.paths)} (one per store), got {len(weights)}")
        if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
            raise SpecError(f"mixture weights must be >= 0 with a positive sum, got {list(weights)}")
        self.horizon, self.history, self.images = horizon, history, images
        self.skip_corrupt = skip_corrupt
        self.image_size = parse_size(image_size)
        self.weights = list(weights) if weights is not None else None
        self._stores = [s if isinstance(s, EpisodeStore) else EpisodeStore.open(s) for s in stores]

        # Flat index over every frame of every selected episode.
        ep_rows, store_of, frames = [], [], []
        self._state, self._action, self._task, self._emb, self._start, self._len = [], [], [], [], [], []
        self._env: list[np.ndarray | None] = []  # ENV_STATE rows per episode (None: it has none)
        self.env_state_dim = self._env_dim(embodiments)  # None: no window has the key
        self.embodiments = {}
        for si, store in enumerate(self._stores):
            for info in store.infos():
                if embodiments is not None and info.embodiment not in embodiments:
                    continue
                has_env = self.env_state_dim is not None and store.env_state_dim(info.embodiment) is not None
                self._env.append(store.lowdim(info.embodiment, ENV_STATE, info.start, info.end) if has_env else None)
                self.embodiments.setdefault(info.embodiment, store.embodiments[info.embodiment])
                e = len(self._len)
                self._state.append(store.lowdim(info.embodiment, STATE, info.start, info.end))
                self._action.append(store.lowdim(info.embodiment, ACTION, info.start, info.end))
                self._task.append(info.task)
                self._emb.append(info.embodiment)
                self._start.append(info.start)
                self._len.append(info.length)
                ep_rows.append(np.full(info.length, e, np.int64))
                frames.append(np.arange(info.length, dtype=np.int64))
                store_of.append(si)
        if not self._len:
            which = f" for embodiments {list(embodiments)}" if embodiments else ""
            raise SpecError(f"no episodes to sample from in {self.paths}{which}")
        self._ep_store = np.asarray(store_of, np.int64)
        self._ep = np.concatenate(ep_rows)
        self._t = np.concatenate(frames)

    def _env_dim(self, embodiments) -> int | None:
        """The ENV_STATE dim shared by every store/embodiment that has one (None: none has)."""
        dims = {}
        for store in self._stores:
            for name in {i.embodiment for i in store.infos()}:
                if embodiments is not None and name not in embodiments:
                    continue
                d = store.env_state_dim(name)
                if d is not None:
                    dims[f"{store.path}:{name}"] = d
        if len(set(dims.values())) > 1:
            raise SpecError(f"{ENV_STATE}: dims differ across stores/embodiments: {dims}; they must agree")
        return next(iter(dims.values()), None)

    def __getstate__(self):
        d = self.__dict__.copy()
        d["_stores"] = None  # reopened lazily in each DataLoader worker
        return d

    def _store(self, si: int) -> EpisodeStore:
        if self._stores is None:
            self._stores = [EpisodeStore.open(p) for p in self.paths]
        return self._stores[si]

    def __len__(self) -> int:
        return len(self._ep)

    def sample_probs(self) -> np.ndarray:
        """Per window, the probability of drawing it: store k gets weights[k] / sum(weights) of the
        mass (default: stores in proportion to their windows), spread evenly over its windows."""
        per_ep_store = self._ep_store[self._ep]
        counts = np.bincount(per_ep_store, minlength=len(self.paths)).astype(np.float64)
        w = np.asarray(self.weights if self.weights is not None else counts, np.float64)
        p = np.where(counts[per_ep_store] > 0, w[per_ep_store] / np.maximum(counts[per_ep_store], 1), 0.0)
        return p / p.sum()

    def sampler(self, num_samples: int | None = None, *, seed: int = 0) -> WeightedRandomSampler:
        """Draws windows by `sample_probs` (with replacement)."""
        g = torch.Generator().manual_seed(seed)
        return WeightedRandomSampler(
            torch.as_tensor(self.sample_probs()), num_samples or len(self), replacement=True, generator=g
        )

    def indices(self, *, embodiment: str | None = None) -> np.ndarray:
        """Window indices, all or those of one embodiment."""
        if embodiment is None:
            return np.arange(len(self))
        ep_emb = np.asarray(self._emb)
        return np.flatnonzero(ep_emb[self._ep] == embodiment)

    def episode_of(self, i) -> np.ndarray | int:
        """Which of this dataset's episodes (0..) window(s) i belong to."""
        return self._ep[i]

    # ---- windows ----
    def lowdim(self, i: int) -> dict:
        """Window i without images: action chunk, action_is_pad, state, task, embodiment."""
        e, t = int(self._ep[i]), int(self._t[i])
        n, h = self._len[e], self.horizon
        act = self._action[e]
        idx = np.arange(t, t + h)
        pad = idx >= n
        out = {ACTION: act[np.minimum(idx, n - 1)], ACTION_IS_PAD: pad, TASK: self._task[e], EMBODIMENT: self._emb[e]}
        if self.history:
            obs_t = np.arange(t - self.history, t + 1)
            out["obs_is_pad"] = obs_t < 0
            out[STATE] = self._state[e][np.maximum(obs_t, 0)]
        else:
            out[STATE] = self._state[e][t]
        if self.env_state_dim is not None:
            env = self._env[e]
            out[ENV_STATE] = env[t] if env is not None else np.full(self.env_state_dim, np.nan, np.float32)
        return out

    def _obs_frames(self, i: int) -> list[int]:
        """Global store frame indices of the observation frames of window i."""
        e, t = int(self._ep[i]), int(self._t[i])
        ts = range(t - self.history, t + 1) if self.history else (t,)
        return [self._start[e] + max(x, 0) for x in ts]

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices) -> list[dict]:
        indices = [int(i) for i in indices]
        if not self.skip_corrupt:
            return self._read(indices)
        try:
            return self._read(indices)
        except CorruptFrameError:
            return [self._read_or_substitute(i) for i in indices]

    def _read_or_substitute(self, i: int) -> dict:
        """Window i, or (its frame being corrupt) the first readable of a fixed sequence of others."""
        for k in range(SUBSTITUTE_TRIES + 1):
            j = i if k == 0 else (i + k * 7919) % len(self)
            try:
                sample = self._read([j])[0]
            except CorruptFrameError as e:
                log.warning("skipping a training window: %s", e)
                continue
            if k:
                sample[CORRUPT] = 1
            return sample
        raise StoreError(
            f"window {i} and {SUBSTITUTE_TRIES} others all have corrupt frames: the store is broken; "
            "`vla data verify STORE` names the frames"
        )

    def _read(self, indices: list[int]) -> list[dict]:
        samples = [self.lowdim(i) for i in indices]
        if not self.images:
            return samples
        # Batch the image reads per (store, embodiment, camera).
        groups = defaultdict(list)
        for k, i in enumerate(indices):
            e = int(self._ep[i])
            groups[(int(self._ep_store[e]), self._emb[e])].append((k, i))
        for (si, emb_name), members in groups.items():
            store = self._store(si)
            frames = [f for _, i in members for f in self._obs_frames(i)]
            per = self.history + 1
            for cam in self.embodiments[emb_name].camera_names:
                imgs = store.frames(emb_name, cam).read(frames, self.image_size)
                for j, (k, _) in enumerate(members):
                    samples[k][image_key(cam)] = imgs[j * per : (j + 1) * per] if self.history else imgs[j]
        return samples


def collate_windows(samples: list[dict], *, stack_images: bool = True) -> dict:
    """Stack samples into a batch of tensors; pads mixed embodiments.

    State/action are right-padded with zeros to the largest dim in the batch, with
    `state_dim_is_pad` / `action_dim_is_pad` [b, dim] marking padding. A camera missing from
    some samples is zero-filled there, with `image_mask/<cam>` [b] False for those samples.
    With stack_images=False, images stay a list per camera (None where missing), for batches
    whose embodiments use different image sizes under one camera name. ENV_STATE, when present,
    is stacked to float32 [b, d] with its NaN (unknown) rows kept.
    """
    out: dict = {TASK: [s[TASK] for s in samples], EMBODIMENT: [s[EMBODIMENT] for s in samples]}
    for key, pad_key in ((STATE, "state_dim_is_pad"), (ACTION, "action_dim_is_pad")):
        arrs = [s[key] for s in samples]
        dmax = max(a.shape[-1] for a in arrs)
        if all(a.shape[-1] == dmax for a in arrs):
            out[key] = torch.from_numpy(np.stack(arrs))
        else:
            batch = np.zeros((len(arrs), *arrs[0].shape[:-1], dmax), np.float32)
            for k, a in enumerate(arrs):
                batch[k, ..., : a.shape[-1]] = a
            out[key] = torch.from_numpy(batch)
        mask = np.ones((len(arrs), dmax), bool)
        for k, a in enumerate(arrs):
            mask[k, : a.shape[-1]] = False
        out[pad_key] = torch.from_numpy(mask)
    if any(ENV_STATE in s for s in samples):  # NaN (unknown) survives: auxiliary losses mask it
        d = next(s[ENV_STATE].shape[-1] for s in samples if ENV_STATE in s)
        nan = np.full(d, np.nan, np.float32)
        out[ENV_STATE] = torch.from_numpy(np.stack([np.asarray(s.get(ENV_STATE, nan), np.float32) for s in samples]))
    for key in (ACTION_IS_PAD, "obs_is_pad"):
        if key in samples[0]:
            out[key] = torch.from_numpy(np.stack([s[key] for s in samples]))
    cams = sorted({k for s in samples for k in s if k.startswith(IMAGE_PREFIX)})
    for key in cams:
        present = [key in s for s in samples]
        out["image_mask/" + key[len(IMAGE_PREFIX) :]] = torch.tensor(present)
        if not stack_images:
            out[key] = [s.get(key) for s in samples]
            continue
        ref = next(s[key] for s in samples if key in s)
        if any(key in s and s[key].shape != ref.shape for s in samples):
            shapes = sorted({s[key].shape for s in samples if key in s})
            raise SpecError(f"{key}: image shapes differ within a batch {shapes}; resize per embodiment first")
        batch = np.zeros((len(samples), *ref.shape), np.uint8)
        for k, s in enumerate(samples):
            if key in s:
                batch[k] = s[key]
        out[key] = torch.from_numpy(batch)
    return out


def make_loader(
    ds: WindowDataset, batch_size: int, *, workers: int = 0, num_samples: int | None = None, seed: int = 0, **kwargs
) -> DataLoader:
    """A DataLoader over `ds` drawing windows by the mixture weights, batches collated.

    With workers, tensors cross processes through named shared memory ("file_system"
    strategy): measured ~1.7x the windows/s of the default file-descriptor passing for
    batches of 32 windows with two 96x96 cameras (`vla bench data`).
    """
    if workers > 0:
        torch.multiprocessing.set_sharing_strategy("file_system")
    return DataLoader(
        ds,
        batch_size=batch_size,
        sampler=ds.sampler(num_samples, seed=seed),
        num_workers=workers,
        collate_fn=collate_windows,
        persistent_workers=workers > 0,
        **kwargs,
    )
