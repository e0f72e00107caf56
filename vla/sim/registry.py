"""Gymnasium registration and name lookup for every simulated env: built-in and external suites.

Built-in ids: `vla/<Robot>-<Task>-v0` (e.g. `vla/Arm7-Reach-v0`, `vla/Bimanual-Handover-v0`).
External suites register their own robot names ("metaworld", "aloha") with the task names of
their packages; `make_env` is the one entry point for all of them.
"""

from __future__ import annotations

import gymnasium as gym

from vla.sim.robots import ROBOTS, get_robot
from vla.sim.tasks import TASKS, get_task
from vla.spec import SpecError

EXTERNAL = ("metaworld", "aloha")


def env_id(robot: str, task: str) -> str:
    return f"vla/{get_robot(robot).env_name}-{get_task(task).env_name}-v0"


def builtin_pairs() -> list[tuple[str, str]]:
    """Every (robot, task) combination of the built-in robots and tasks."""
    return [(r, t) for t, cls in TASKS.items() for r in cls.robots if r in ROBOTS]


def register_all() -> None:
    for robot, task in builtin_pairs():
        gid = env_id(robot, task)
        if gid not in gym.registry:
            gym.register(id=gid, entry_point="vla.sim.env:SimEnv", kwargs={"robot": robot, "task": task})


def list_robots() -> list[str]:
    return sorted(ROBOTS) + list(EXTERNAL)


def list_tasks(robot: str | None = None) -> list[str]:
    if robot in EXTERNAL:
        return _external(robot).list_tasks()
    if robot is not None:
        get_robot(robot)
        return sorted(t for r, t in builtin_pairs() if r == robot)
    return sorted(TASKS)


def _external(robot: str):
    if robot == "metaworld":
        from vla.sim.external import metaworld as mod
    else:
        from vla.sim.external import aloha as mod
    return mod


def make_env(robot: str, task: str, *, image_size: int = 96, seed: int | None = None, **kwargs):
    """A gymnasium env for (robot, task); the first reset uses `seed` when given."""
    if robot in EXTERNAL:
        env = _external(robot).make(task, image_size=image_size, **kwargs)
    else:
        get_robot(robot)  # unknown names list the valid ones
        if robot not in get_task(task).robots:
            raise SpecError(f"task {task!r} is not defined for robot {robot!r}; {robot} has tasks {list_tasks(robot)}")
        register_all()
        env = gym.make(env_id(robot, task), image_size=image_size, disable_env_checker=True, **kwargs)
    if seed is not None:
        env.reset(seed=seed)
    return env


def embodiment_for(robot: str, image_size: int = 96):
    """The Embodiment an env of this robot produces at this image size (no env is built)."""
    if robot in EXTERNAL:
        return _external(robot).embodiment(image_size)
    return get_robot(robot).embodiment(image_size)
