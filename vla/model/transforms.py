"""Between the world (frames, observations, actions in robot units) and the model's tensors.

One fixed order, both ways:
  in:  validate against the embodiment -> images: resize-with-pad to S x S, to [-1, 1],
       camera slots in the embodiment's camera order -> state: normalize, pad
       -> instruction: tokenize -> (training) actions: normalize, pad (+ FAST tokens)
  out: model actions [b, h, a_max] -> slice each row to its embodiment's dims -> unnormalize

With `delta_actions`, joint position commands are modelled relative to the state the chunk
starts from: normalized target (a - s) / scale for those dims (see `delta_dims`), and on the
way out a = s + scale * y; every other dim (grippers) stays absolute.

`build_transforms` is the one place Transforms are assembled from a model config, for
training and for a loaded checkpoint alike; a model type's extra training targets (FAST
tokens) come from its `action_targets` hook and run here, in the data workers.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from vla.data.stats import KeyStats
from vla.model.text import TextTokenizer
from vla.spec import ACTION, ACTION_IS_PAD, EMBODIMENT, ENV_STATE, STATE, TASK, Embodiment, SpecError, image_key

log = logging.getLogger(__name__)

DELTA_UNITS = ("rad", "m")
_NO_DELTA = (np.zeros(0, int), np.zeros(0, int))


def delta_dims(emb: Embodiment) -> tuple[np.ndarray, np.ndarray]:
    """(action dims, state dims) a delta-action policy predicts relative to the state: position
    commands (joint_position mode) whose state dim has the same name and unit, rad or m."""
    pairs = []
    if emb.action_mode == "joint_position":
        state = {d.name: (j, d.unit) for j, d in enumerate(emb.state)}
        pairs = [
            (i, state[d.name][0])
            for i, d in enumerate(emb.actions)
            if d.unit in DELTA_UNITS and state.get(d.name, (None, None))[1] == d.unit
        ]
    return np.array([p[0] for p in pairs], int), np.array([p[1] for p in pairs], int)


def resize_with_pad(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8/float [n, H, W, 3] -> float [n, 3, size, size] in [-1, 1], aspect kept, padded with -1."""
    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (size - nh) // 2, (size - nw) // 2
    return F.pad(x, (left, size - nw - left, top, size - nh - top), value=-1.0)


PROMPT_FORMATS = ("plain", "paligemma", "pi05")
STATE_BINS = 256  # pi0.5 writes each normalized state dim as one of 256 bins over [-1, 1]


def clean_instruction(task: str) -> str:
    return task.strip().replace("_", " ").replace("\n", " ")


def format_prompt(task: str, fmt: str, state: np.ndarray | None = None) -> str:
    """The text the tokenizer sees (BOS is added by the tokenizer):
    plain      the instruction as given (models trained by vla from scratch)
    paligemma  openpi's pi0: the cleaned instruction + "\n"
    pi05       openpi's pi0.5: "Task: <cleaned>, State: <bins>;\nAction: " with the
               normalized state (clipped to [-1, 1]) discretized into 256 bins."""
    if fmt == "plain":
        return task
    if fmt == "paligemma":
        return clean_instruction(task) + "\n"
    if fmt == "pi05":
        bins = np.digitize(np.clip(state, -1.0, 1.0), np.linspace(-1.0, 1.0, STATE_BINS + 1)[:-1]) - 1
        return f"Task: {clean_instruction(task)}, State: {' '.join(str(int(b)) for b in bins)};\nAction: "
    raise SpecError(f"prompt_format must be one of {PROMPT_FORMATS}, got {fmt!r}")


class Transforms:
    def __init__(
        self,
        embodiments: dict[str, Embodiment],
        stats: dict[str, dict[str, KeyStats]],
        norm_mode: str,
        text: TextTokenizer | None,
        *,
        image_size: int,
        cameras: int,
        max_tokens: int,
        horizon: int,
        delta_actions: bool = False,
        targets=None,
        prompt_format: str = "plain",
        padded_dim: int = 0,
    ):
        """text None: the model runs on token ids only (a converted checkpoint without its
        tokenizer); turning instructions into tokens is then refused. padded_dim > 0: state and
        actions are zero-padded to that width (a shared head, openpi's convention)."""
        self.missing_stats = sorted(
            n for n in embodiments if n not in stats or STATE not in stats[n] or ACTION not in stats[n]
        )
        if prompt_format not in PROMPT_FORMATS:
            raise SpecError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
        self.embodiments, self.stats, self.mode = embodiments, stats, norm_mode
        self.text, self.image_size, self.cameras = text, image_size, cameras
        self.max_tokens, self.horizon, self.prompt_format = max_tokens, horizon, prompt_format
        self.s_max = max(padded_dim, *(e.state_dim for e in embodiments.values()))
        self.a_max = max(padded_dim, *(e.action_dim for e in embodiments.values()))
        self.targets = targets  # vla.model.contract.ActionTargets or None
        self.delta = {n: delta_dims(e) for n, e in embodiments.items()} if delta_actions else {}
        for e in embodiments.values():
            if len(e.cameras) > cameras:
                raise SpecError(f"embodiment {e.name!r} has {len(e.cameras)} cameras, the model has {cameras} slots")

    def _emb(self, name: str) -> Embodiment:
        if name not in self.embodiments:
            raise SpecError(
                f"embodiment {name!r} is not known to this checkpoint (it has norm stats for "
                f"{sorted(self.embodiments)})"
            )
        return self.embodiments[name]

    def _norm(self, name: str, key: str, x: np.ndarray) -> np.ndarray:
        self._need_stats(name)
        y = self.stats[name][key].normalize(x, self.mode)
        return np.clip(y, -1.0, 1.0) if self.mode == "quantile" else y

    def _norm_chunk(self, name: str, act: np.ndarray, state: np.ndarray | None) -> np.ndarray:
        """Robot-unit actions [h, a] -> normalized; delta dims relative to `state` (robot units)."""
        y = self._norm(name, ACTION, act)
        ai, si = self._delta_for(name, state)
        if len(ai):
            y[:, ai] = (act[:, ai] - state[si]) / self.stats[name][ACTION].scale(self.mode)[ai]
        return y

    def _need_stats(self, name: str) -> None:
        if name in self.missing_stats:
            raise SpecError(
                f"no norm stats for embodiment {name!r} in this checkpoint (converted without them?): "
                "fine-tune it on your data (vla train --init CKPT), which computes them, or convert "
                "from a source that has them"
            )

    def _unnorm_chunk(self, name: str, y: np.ndarray, state: np.ndarray | None) -> np.ndarray:
        self._need_stats(name)
        a = self.stats[name][ACTION].unnormalize(y, self.mode)
        ai, si = self._delta_for(name, state)
        if len(ai):
            a[:, ai] = state[si] + y[:, ai] * self.stats[name][ACTION].scale(self.mode)[ai]
        return a

    def _delta_for(self, name: str, state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        ai, si = self.delta.get(name, _NO_DELTA)
        if len(ai) and state is None:
            raise SpecError(
                f"embodiment {name!r}: this checkpoint predicts joint actions relative to the state "
                "(delta_actions), so converting actions needs the observation's state"
            )
        return ai, si

    # ---- common tail: state, text, images ----
    def _assemble(self, names: list[str], states: list[np.ndarray], tasks: list[str], cams: list[list]) -> dict:
        b = len(names)
        state = np.zeros((b, self.s_max), np.float32)
        for i, (n, s) in enumerate(zip(names, states)):
            state[i, : len(s)] = self._norm(n, STATE, s)
        if self.text is None:
            raise SpecError(
                "this checkpoint has no text tokenizer (converted without one): convert again with "
                "--tokenizer PATH (a tokenizer.json, e.g. PaliGemma's), or send token ids to the model"
            )
        prompts = [
            format_prompt(t, self.prompt_format, state[i, : len(s)]) for i, (t, s) in enumerate(zip(tasks, states))
        ]
        ids, mask = self.text.encode(prompts, self.max_tokens)
        images = torch.full((b, self.cameras, 3, self.image_size, self.image_size), -1.0)
        image_mask = torch.zeros(b, self.cameras, dtype=torch.bool)
        for i, row in enumerate(cams):
            for slot, img in enumerate(row):
                if img is not None:
                    images[i, slot] = resize_with_pad(torch.as_tensor(img)[None], self.image_size)[0]
                    image_mask[i, slot] = True
        return {
            "images": images,
            "image_mask": image_mask,
            "tokens": torch.from_numpy(ids),
            "token_mask": torch.from_numpy(mask),
            "state": torch.from_numpy(state),
            "embodiment": list(names),
        }

    def from_windows(self, batch: dict) -> dict:
        """A collated sampler batch (vla.data.sampler.collate_windows) -> model batch."""
        names = list(batch[EMBODIMENT])
        for n in set(names):
            self._emb(n)
        st = batch[STATE].numpy()
        states = [st[i, : self.embodiments[n].state_dim] for i, n in enumerate(names)]
        cams = []
        for i, n in enumerate(names):
            row = []
            for cam in self.embodiments[n].camera_names:
                key = image_key(cam)
                ok = key in batch and bool(batch.get(f"image_mask/{cam}", torch.ones(len(names), dtype=torch.bool))[i])
                row.append(batch[key][i] if ok else None)
            cams.append(row)
        out = self._assemble(names, states, list(batch[TASK]), cams)
        act = batch[ACTION].numpy()
        h = act.shape[1]
        if h != self.horizon:
            raise SpecError(f"window horizon {h} != model horizon {self.horizon}")
        actions = np.zeros((len(names), h, self.a_max), np.float32)
        for i, n in enumerate(names):
            a = self.embodiments[n].action_dim
            actions[i, :, :a] = self._norm_chunk(n, act[i, :, :a], states[i])
        out["actions"] = torch.from_numpy(actions)
        out["action_is_pad"] = batch[ACTION_IS_PAD]
        if self.targets is not None:
            out.update(self.targets(names, actions))
        if ENV_STATE in batch:
            out.update(self._env_state(names, np.asarray(batch[ENV_STATE], np.float32)))
        return out

    def _env_state(self, names: list[str], env: np.ndarray) -> dict:
        """Training-only scene facts [b, e] (NaN: unknown) -> `env_state` z-scored with the
        embodiment's stats (whatever the norm mode: they are regression targets, never inputs)
        and `env_state_valid` [b] (False where a row has no facts or its embodiment no stats)."""
        out = np.zeros(env.shape, np.float32)
        valid = np.zeros(len(names), bool)
        for i, n in enumerate(names):
            st = self.stats.get(n, {}).get(ENV_STATE)
            if st is None or st.mean.shape != env.shape[1:] or not np.isfinite(env[i]).all():
                continue
            out[i], valid[i] = st.normalize(env[i], "zscore"), True
        return {"env_state": torch.from_numpy(out), "env_state_valid": torch.from_numpy(valid)}

    def from_observations(self, observations: list[dict], default_embodiment: str | None = None) -> dict:
        """Robot/env observations (frame keys + task + embodiment) -> model batch; validates each."""
        names, states, tasks, cams = [], [], [], []
        for obs in observations:
            name = obs.get(EMBODIMENT) or default_embodiment
            if name is None:
                raise SpecError(
                    f"observation has no {EMBODIMENT!r} and the checkpoint knows several: {sorted(self.embodiments)}"
                )
            emb = self._emb(name)
            s = np.asarray(obs.get(STATE, None) if STATE in obs else None)
            if STATE not in obs or s.shape != (emb.state_dim,):
                got = "missing" if STATE not in obs else f"shape {s.shape}"
                raise SpecError(f"embodiment {name!r}, key {STATE!r}: expected shape ({emb.state_dim},), got {got}")
            if not np.isfinite(s.astype(np.float64)).all():
                raise SpecError(f"embodiment {name!r}, key {STATE!r}: non-finite values")
            row = []
            for cam in emb.cameras:
                key = image_key(cam.name)
                if key not in obs:
                    raise SpecError(f"embodiment {name!r}: missing camera key {key!r}")
                img = np.asarray(obs[key])
                if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                    raise SpecError(
                        f"embodiment {name!r}, key {key!r}: expected uint8 HxWx3, got {img.dtype} {img.shape}"
                    )
                if img.shape != cam.shape:
                    raise SpecError(f"embodiment {name!r}, key {key!r}: expected image {cam.shape}, got {img.shape}")
                row.append(img)
            task = obs.get(TASK, obs.get("prompt"))
            if not isinstance(task, str):
                raise SpecError(
                    f"observation needs the instruction as a string under {TASK!r} (or 'prompt'), "
                    f"got {type(task).__name__}"
                )
            names.append(name)
            states.append(s.astype(np.float32))
            tasks.append(task)
            cams.append(row)
        return self._assemble(names, states, tasks, cams)

    def normalize_actions(self, actions: np.ndarray, names: list[str], states: list | None = None) -> np.ndarray:
        """Robot-unit actions [b, h, a_e] (rows may be narrower) -> normalized [b, h, a_max], zero-padded.

        `states` (robot units, one per row): the states the chunks start from; needed by a
        delta-action checkpoint.
        """
        out = np.zeros((len(names), actions.shape[1], self.a_max), np.float32)
        for i, n in enumerate(names):
            a = self._emb(n).action_dim
            s = None if states is None else np.asarray(states[i], np.float32)
            out[i, :, :a] = self._norm_chunk(n, np.asarray(actions[i], np.float32)[:, :a], s)
        return out

    def to_actions(self, actions: torch.Tensor, names: list[str], states: list | None = None) -> list[np.ndarray]:
        """Model actions [b, h, a_max] (normalized) -> per row float32 [h, a_e] in robot units (see normalize_actions)."""
        out = []
        x = actions.float().cpu().numpy()
        for i, n in enumerate(names):
            a = self.embodiments[n].action_dim
            s = None if states is None else np.asarray(states[i], np.float32)
            out.append(self._unnorm_chunk(n, x[i, :, :a], s).astype(np.float32))
        return out


def build_transforms(
    model_cls,
    cfg,
    *,
    embodiments: dict[str, Embodiment],
    stats,
    norm_mode: str,
    text: TextTokenizer | None,
    assets: dict,
    text_vocab: int | None = None,
) -> Transforms:
    """The Transforms of a model config (`model_cls`: its vla.model.contract.ActionModel class)."""
    vocab = text_vocab or (text.vocab_size if text is not None else 0)
    return Transforms(
        embodiments,
        stats,
        norm_mode,
        text,
        image_size=cfg.backbone.image_size,
        cameras=cfg.cameras,
        max_tokens=cfg.max_tokens,
        horizon=cfg.horizon,
        delta_actions=cfg.delta_actions,
        targets=model_cls.action_targets(cfg, assets, vocab),
        prompt_format=cfg.prompt_format,
        padded_dim=cfg.padded_dim,
    )
