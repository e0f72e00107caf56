"""Task registry: name -> Task class."""

from __future__ import annotations

from vla.sim.tasks.base import Segment, Task, TaskConfig
from vla.sim.tasks.handover import HandoverTask
from vla.sim.tasks.pick_place import PickPlaceTask
from vla.sim.tasks.push import PushTask
from vla.sim.tasks.reach import ReachGoalTask, ReachTask
from vla.sim.tasks.track import TrackTask
from vla.spec import SpecError

TASKS: dict[str, type[Task]] = {
    ReachTask.name: ReachTask,
    ReachGoalTask.name: ReachGoalTask,
    PickPlaceTask.name: PickPlaceTask,
    PushTask.name: PushTask,
    HandoverTask.name: HandoverTask,
    TrackTask.name: TrackTask,
}


def get_task(name: str) -> type[Task]:
    try:
        return TASKS[name]
    except KeyError:
        raise SpecError(f"unknown task {name!r}; built-in tasks are {sorted(TASKS)}") from None


__all__ = ["TASKS", "Segment", "Task", "TaskConfig", "get_task"]
