"""What the scripted hand does to a virtual leader arm: a joint trajectory, replayed in a loop.

SO-100/SO-101: the scripted expert of vla.sim (pick-place on arm5, the same kinematics) is run once, off
line, and its joint positions recorded: the leader then moves as a person demonstrating the task would.
Koch (no sim tasks for its kinematics): a smooth wandering within each joint's range. Each loop ends with
a smooth return to the start, so the replay never jumps.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

RETURN_S = 1.5  # seconds to glide from the end of a take back to its start


class Trajectory:
    """Joint values over time, looped: `at(t) -> (q [n], qdot [n])`."""

    def __init__(self, q: np.ndarray, dt: float):
        q = np.asarray(q, np.float64)
        if q.ndim != 2 or len(q) < 2:
            raise ValueError(f"a trajectory needs at least 2 samples of shape [t, joints], got {q.shape}")
        k = max(2, int(RETURN_S / dt))
        s = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k + 1)[1:-1])[:, None]  # ease in and out
        back = q[-1] + s * (q[0] - q[-1])
        self.q = np.concatenate([q, back])
        self.dt = float(dt)
        self.period = len(self.q) * self.dt

    def at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        x = (t % self.period) / self.dt
        i = int(x)
        j = (i + 1) % len(self.q)
        f = x - i
        q = (1 - f) * self.q[i] + f * self.q[j]
        return q, (self.q[j] - self.q[i]) / self.dt


def expert_trajectory(seed: int = 0, task: str = "pick-place") -> Trajectory:
    """arm5's scripted expert doing `task`, as joint values of the SO arm's six motors (fingers in m)."""
    import mujoco

    from vla.sim.expert import make_expert
    from vla.sim.registry import make_env

    env = make_env("arm5", task, image_size=8, seed=seed)
    try:
        e = env.unwrapped
        e.reset(seed=seed)
        expert = make_expert(env, seed=seed)
        fingers = [e.model.jnt_qposadr[e.model.joint(f).id] for f in e.robot.arms[0].fingers]
        rows = []
        for _ in range(e.max_steps):
            e.apply_action(expert.act())
            mujoco.mj_step(e.model, e.data, nstep=e.n_substeps)
            rows.append(np.concatenate([e.arm_q(0), [float(np.mean(e.data.qpos[fingers]))]]))
            if expert.done:
                break
        return Trajectory(np.array(rows), 1.0 / e.robot.control_hz)
    finally:
        env.close()


def wander_trajectory(ranges: np.ndarray, home: np.ndarray, seed: int = 0, seconds: float = 20.0) -> Trajectory:
    """Sums of slow sines around `home`, within 60% of each joint's range (ranges: [n, 2])."""
    rng = np.random.default_rng(seed)
    dt = 0.02
    t = np.arange(0, seconds, dt)[:, None]
    lo, hi = ranges[:, 0], ranges[:, 1]
    amp = 0.3 * (hi - lo)
    freq = rng.uniform(0.05, 0.25, (2, len(home)))
    phase = rng.uniform(0, 2 * np.pi, (2, len(home)))
    wave = 0.6 * np.sin(2 * np.pi * freq[0] * t + phase[0]) + 0.4 * np.sin(2 * np.pi * freq[1] * t + phase[1])
    q = np.clip(home + amp * (wave - wave[0]), lo, hi)
    return Trajectory(q, dt)
