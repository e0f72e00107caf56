"""Synthetic episodes for tests, benchmarks and the data quickstart (no simulator needed).

A point moves from a random start towards one of three coloured targets; the instruction
names the colour. Cameras draw the targets and the point as squares (front: fixed view;
wrist: a view centred on the point), so frames are cheap to make yet look like a scene.
"""

from __future__ import annotations

import numpy as np

from vla.data.store import EpisodeStore
from vla.spec import ACTION, STATE, TIMESTAMP, Embodiment, image_key

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230)}


def _draw(h: int, w: int, centre: np.ndarray, targets: dict, point: np.ndarray, span: float) -> np.ndarray:
    img = np.full((h, w, 3), 235, np.uint8)
    img[h // 2 :, :] = 205  # a floor, so frames are not flat colour

    def to_px(p):
        rel = (np.asarray(p[:2]) - centre[:2]) / span
        return int((rel[1] * 0.5 + 0.5) * (h - 1)), int((rel[0] * 0.5 + 0.5) * (w - 1))

    r = max(2, h // 16)
    for colour, pos in targets.items():
        y, x = to_px(pos)
        img[max(0, y - r) : max(0, y + r), max(0, x - r) : max(0, x + r)] = COLOURS[colour]
    y, x = to_px(point)
    img[max(0, y - r // 2) : max(0, y + r // 2 + 1), max(0, x - r // 2) : max(0, x + r // 2 + 1)] = (20, 20, 20)
    return img


def synthetic_episode(emb: Embodiment, length: int, rng: np.random.Generator) -> tuple[list[dict], str]:
    """One episode of `emb` (any dims/cameras): frames and instruction."""
    s, a = emb.state_dim, emb.action_dim
    targets = {c: rng.uniform(-0.8, 0.8, 2) for c in COLOURS}
    goal_colour = str(rng.choice(list(COLOURS)))
    goal = targets[goal_colour]
    pos = rng.uniform(-0.8, 0.8, 2)
    phase = rng.uniform(0, 2 * np.pi, max(s, a))
    frames = []
    for t in range(length):
        alpha = min(1.0, (t + 1) / (0.8 * length))
        target = pos + (goal - pos) * alpha
        state = np.zeros(s, np.float32)
        state[: min(2, s)] = target[: min(2, s)]
        state[2:] = np.sin(phase[2:s] + t / 7.0)
        action = np.zeros(a, np.float32)
        nxt = pos + (goal - pos) * min(1.0, (t + 2) / (0.8 * length))
        action[: min(2, a)] = nxt[: min(2, a)]
        action[2:] = np.sin(phase[2:a] + (t + 1) / 7.0)
        frame = {STATE: state, ACTION: action, TIMESTAMP: t / emb.control_hz}
        for k, cam in enumerate(emb.cameras):
            centre = np.zeros(2) if k == 0 else target
            span = 1.0 if k == 0 else 0.5
            frame[image_key(cam.name)] = _draw(cam.height, cam.width, centre, targets, target, span)
        frames.append(frame)
    phrasing = ["reach the {} target", "go to the {} square", "touch the {} one"][int(rng.integers(3))]
    return frames, phrasing.format(goal_colour)


def write_synthetic(
    store: EpisodeStore,
    emb: Embodiment,
    episodes: int,
    length: int,
    *,
    seed: int = 0,
    source: str = "synthetic",
    progress: bool = False,
) -> None:
    from tqdm import tqdm

    store.add_embodiment(emb)
    rng = np.random.default_rng(seed)
    with store.writer(emb.name, source=source) as w:
        for _ in tqdm(range(episodes), desc=f"synthetic {emb.name}", disable=not progress, unit="ep"):
            frames, task = synthetic_episode(emb, length, rng)
            for f in frames:
                w.add_frame(f)
            w.end_episode(task=task, success=True)


class CameraFrames:
    """Camera-like frames for benchmarks: a real photo (matplotlib's bundled sample) seen by a
    camera that moves (smooth pan, sub-frame jitter, slow exposure drift) with Gaussian sensor
    noise (sigma `noise` levels): content that, like real camera data, does not compress
    losslessly. `frames(camera, start, n)` is deterministic in (camera, frame index)."""

    def __init__(self, height: int = 480, width: int = 640, *, noise: float = 2.0, seed: int = 0):
        import matplotlib
        from PIL import Image

        path = f"{matplotlib.get_data_path()}/sample_data/grace_hopper.jpg"
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = max(1.45 * width / im.width, 1.2 * height / im.height)
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
            self._base = np.asarray(im).astype(np.float32)
        self.h, self.w, self.noise, self.seed = height, width, noise, seed
        rng = np.random.default_rng(seed)
        # A bank of noise fields, picked and rolled per frame (drawing fresh noise costs ~4x the rest).
        self._noise = rng.standard_normal((6, height, width, 3), dtype=np.float32) * noise

    def frame(self, camera: int, t: int) -> np.ndarray:
        H, W = self._base.shape[:2]
        rng = np.random.default_rng((self.seed, camera, t))
        phase = 1.7 * camera
        y = (H - self.h) / 2 * (1 + 0.9 * np.sin(t / 37.0 + phase)) + rng.uniform(-1, 1)
        x = (W - self.w) / 2 * (1 + 0.9 * np.cos(t / 23.0 + phase)) + rng.uniform(-1, 1)
        y, x = int(np.clip(y, 0, H - self.h)), int(np.clip(x, 0, W - self.w))
        img = self._base[y : y + self.h, x : x + self.w]
        if camera % 2:
            img = img[:, ::-1]
        noise = np.roll(self._noise[int(rng.integers(len(self._noise)))], int(rng.integers(self.h)), axis=0)
        out = img * (1.0 + 0.03 * np.sin(t / 11.0 + phase)) + noise
        return np.clip(out, 0, 255).astype(np.uint8)

    def frames(self, camera: int, start: int, n: int) -> np.ndarray:
        return np.stack([self.frame(camera, t) for t in range(start, start + n)])
