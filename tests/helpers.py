"""Shared helpers for the tests (importable as `helpers`)."""

from pathlib import Path

import numpy as np

from vla.spec import ACTION, STATE, Camera, Dim, Embodiment, image_key

FIXTURES = Path(__file__).parent / "fixtures"


def tiny_embodiment(name="tiny", s=3, a=2, cams=(("front", 8, 10),), hz=10.0) -> Embodiment:
    return Embodiment(
        name=name,
        state=tuple(Dim(f"s{i}", "rad", -5.0, 5.0) for i in range(s)),
        actions=tuple(Dim(f"a{i}", "rad", -5.0, 5.0) for i in range(a)),
        cameras=tuple(Camera(n, h, w) for n, h, w in cams),
        control_hz=hz,
    )


def make_frame(emb: Embodiment, ep: int, t: int) -> dict:
    """A frame whose values encode (episode, frame) so reads can be checked exactly."""
    f = {
        STATE: np.array([ep, t, *range(emb.state_dim - 2)], np.float32)[: emb.state_dim],
        ACTION: np.full(emb.action_dim, ep * 1000 + t, np.float32),
    }
    for c, cam in enumerate(emb.cameras):
        img = np.zeros(cam.shape, np.uint8)
        img[..., 0] = ep % 256
        img[..., 1] = t % 256
        img[..., 2] = c
        f[image_key(cam.name)] = img
    return f


def fill(store, emb, episodes, length, start_ep=0, task="do {}"):
    with store.writer(emb.name, source="test") as w:
        for e in range(start_ep, start_ep + episodes):
            n = length(e) if callable(length) else length
            for t in range(n):
                w.add_frame(make_frame(emb, e, t))
            w.end_episode(task=task.format(e % 3), success=e % 2 == 0)
