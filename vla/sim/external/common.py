"""Shared pieces of the external-suite adapters: offscreen rendering with shadows off, observation space."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from vla.sim.env import TEXT_CHARSET, track_renderer
from vla.spec import STATE, TASK, Embodiment, image_key


def strip_render_costs(model: mujoco.MjModel) -> None:
    """Shadows, reflections and multisampling off, coarse primitive tessellation: software rendering stays fast."""
    model.light_castshadow[:] = 0
    model.vis.quality.shadowsize = 0
    model.vis.quality.offsamples = 0
    model.vis.quality.numslices, model.vis.quality.numstacks, model.vis.quality.numquads = 12, 6, 1
    model.mat_reflectance[:] = 0
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, 640)
    model.vis.global_.offheight = max(model.vis.global_.offheight, 480)


class CameraRenderer:
    """One mujoco.Renderer for several named cameras of a model, created on first use."""

    def __init__(
        self, model: mujoco.MjModel, size: tuple[int, int], cameras: dict[str, str], flip: tuple[str, ...] = ()
    ):
        self.model, self.size, self.cameras, self.flip = model, size, cameras, set(flip)
        self._r = None

    def render(self, data: mujoco.MjData, name: str) -> np.ndarray:
        if self._r is None:
            self._r = mujoco.Renderer(self.model, *self.size)
            track_renderer(self)
        self._r.update_scene(data, camera=self.cameras[name])
        img = self._r.render()
        return img[::-1, ::-1].copy() if name in self.flip else img

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
            self._r = None


def observation_space(emb: Embodiment) -> gym.spaces.Dict:
    spaces = {image_key(c.name): gym.spaces.Box(0, 255, c.shape, np.uint8) for c in emb.cameras}
    spaces[STATE] = gym.spaces.Box(
        np.array([d.low for d in emb.state], np.float32),
        np.array([d.high for d in emb.state], np.float32),
        dtype=np.float32,
    )
    spaces[TASK] = gym.spaces.Text(max_length=256, min_length=1, charset=TEXT_CHARSET)
    return gym.spaces.Dict(spaces)


def action_space(emb: Embodiment) -> gym.spaces.Box:
    return gym.spaces.Box(
        np.array([d.low for d in emb.actions], np.float32),
        np.array([d.high for d in emb.actions], np.float32),
        dtype=np.float32,
    )
