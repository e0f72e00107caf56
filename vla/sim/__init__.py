"""MuJoCo simulation: built-in robots and language tasks, scripted experts, external suites,
collection into episode stores, and the evaluation harness.

    env = make_env("arm7", "reach", image_size=96)
    expert = make_expert(env, noise=0.02, seed=0)
    collect("datasets/quickstart.toml", "data/quickstart", workers=2)
    results = evaluate("expert", "quickstart", episodes=10)

Gymnasium ids (`vla/Arm7-Reach-v0`, ...) are registered when this package is imported.
"""

from __future__ import annotations

from vla.sim.gl import ensure_offscreen_gl

ensure_offscreen_gl()  # before any sim module imports mujoco

from vla.sim.mujoco_log import route_mujoco_warnings  # noqa: E402

route_mujoco_warnings()  # not MUJOCO_LOG.TXT in the user's working folder

from vla.sim.registry import builtin_pairs, env_id, list_robots, list_tasks, make_env, register_all  # noqa: E402

register_all()

# Imported here, not wrapped lazily: the submodule vla.sim.collect would otherwise replace the
# package's `collect` function with itself the first time anything imports it.
from vla.sim.collect import collect  # noqa: E402


def make_expert(env, *, noise: float = 0.0, seed: int | None = None):
    from vla.sim.expert import make_expert as _make

    return _make(env, noise=noise, seed=seed)


def evaluate(policy, suite, **kwargs) -> dict:
    from vla.sim.eval import evaluate as _evaluate

    return _evaluate(policy, suite, **kwargs)


def list_suites() -> list[str]:
    from vla.sim.suites import list_suites as _list

    return _list()


__all__ = [
    "builtin_pairs",
    "collect",
    "env_id",
    "evaluate",
    "list_robots",
    "list_suites",
    "list_tasks",
    "make_env",
    "make_expert",
    "register_all",
]
