"""Evaluation suites: named sets of (robot, task, episodes), one TOML each in envs/suites/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vla.resources import builtin_names, load_toml
from vla.spec import SpecError


@dataclass(frozen=True)
class SuiteTask:
    robot: str
    task: str
    episodes: int


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    tasks: tuple[SuiteTask, ...]
    image_size: int = 96
    replan_every: int | None = None  # None: half the policy's chunk
    seed: int = 1_000_000  # first episode seed; far from the collection recipes' seeds
    description: str = ""

    def __post_init__(self):
        if not self.tasks:
            raise SpecError(f"suite {self.name!r}: needs at least one [[tasks]] entry")
        if self.image_size <= 0:
            raise SpecError(f"suite {self.name!r}: image_size must be > 0, got {self.image_size}")


def parse_tasks(name: str, d: dict, what: str, default_episodes: int) -> list[dict]:
    """[[tasks]] entries with robot, task, episodes checked against the registries; extra keys kept."""
    from vla.sim.registry import list_robots, list_tasks

    out = []
    for i, t in enumerate(d.get("tasks", [])):
        for key in ("robot", "task"):
            if key not in t:
                raise SpecError(f"{what} {name!r}: tasks[{i}] needs {key!r}; got keys {sorted(t)}")
        robot, task = t["robot"], t["task"]
        if robot not in list_robots():
            raise SpecError(f"{what} {name!r}: tasks[{i}]: unknown robot {robot!r}; valid robots are {list_robots()}")
        valid = list_tasks(robot)
        if task not in valid:
            raise SpecError(
                f"{what} {name!r}: tasks[{i}]: unknown task {task!r} for robot {robot!r}; valid tasks are {valid}"
            )
        episodes = int(t.get("episodes", default_episodes))
        if episodes < 0:
            raise SpecError(f"{what} {name!r}: tasks[{i}]: episodes must be >= 0, got {episodes}")
        out.append({**t, "episodes": episodes})
    return out


def list_suites() -> list[str]:
    return builtin_names("suite")


def load_suite(name_or_path: str | Path) -> SuiteConfig:
    """A suite by built-in name (envs/suites/<name>.toml) or TOML path."""
    d, p = load_toml(name_or_path, "suite")
    known = {"name", "description", "image_size", "episodes", "replan_every", "seed", "tasks"}
    if set(d) - known:
        raise SpecError(f"{p}: unknown keys {sorted(set(d) - known)}; expected some of {sorted(known)}")
    name = d.get("name", p.stem)
    tasks = parse_tasks(name, d, "suite", int(d.get("episodes", 10)))
    return SuiteConfig(
        name=name,
        tasks=tuple(SuiteTask(t["robot"], t["task"], t["episodes"]) for t in tasks),
        image_size=int(d.get("image_size", 96)),
        replan_every=d.get("replan_every"),
        seed=int(d.get("seed", 1_000_000)),
        description=d.get("description", ""),
    )
