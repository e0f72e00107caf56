"""Embodiment and feature specs, frame keys, and the shape glossary.

Shape letters used in comments across the package:
    b  batch            h  action horizon (chunk length)
    t  frames / time    a  action dim        s  state dim
    l  tokens           d  model width       c  cameras
    H, W  image height and width (images are uint8 HxWx3, channels last)
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Frame keys (one name, used everywhere: store, sampler, policy, wire protocol).
IMAGE_PREFIX = "observation/images/"
STATE = "observation/state"
# Training-only scene facts from simulation (LeRobot's `observation.environment_state`): for the
# built-in tasks and the ALOHA and Meta-World adapters ENV_STATE_LAYOUT below. Auxiliary losses read
# it; policies never see it at inference.
ENV_STATE = "observation/environment_state"
ENV_STATE_LAYOUT = ("object_x", "object_y", "object_z", "goal_x", "goal_y", "goal_z")
ACTION = "action"
TASK = "task"
TIMESTAMP = "timestamp"
# Sampler outputs.
ACTION_IS_PAD = "action_is_pad"
EMBODIMENT = "embodiment"

ACTION_MODES = ("joint_position", "joint_delta", "ee_delta")


def read_toml(path: str | Path, what: str = "file") -> dict:
    """Parse a TOML file; a missing file or bad syntax raises SpecError naming the path."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{what} not found: {path}") from None
    except OSError as e:  # a directory, no permission ...
        raise SpecError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: invalid TOML: {e}") from None


def image_key(camera: str) -> str:
    return IMAGE_PREFIX + camera


class SpecError(ValueError):
    """A spec (embodiment, frame, config) does not match what was expected."""


@dataclass(frozen=True)
class Dim:
    """One named state or action dimension with its unit and limits."""

    name: str
    unit: str = ""
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self):
        if not self.name:
            raise SpecError("a dimension needs a non-empty name")
        if not self.low <= self.high:
            raise SpecError(f"dimension {self.name!r}: low {self.low} > high {self.high}")


@dataclass(frozen=True)
class Camera:
    name: str
    height: int
    width: int

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise SpecError(f"camera name {self.name!r} must be non-empty and contain no '/'")
        if self.height <= 0 or self.width <= 0:
            raise SpecError(f"camera {self.name!r}: image size must be positive, got {self.height}x{self.width}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


@dataclass(frozen=True)
class Embodiment:
    """What a robot observes and commands; every episode and checkpoint names one."""

    name: str
    state: tuple[Dim, ...]
    actions: tuple[Dim, ...]
    cameras: tuple[Camera, ...] = ()
    control_hz: float = 20.0
    action_mode: str = "joint_position"
    # Free text stating the gripper convention, e.g. "last action dim: 0=open, 1=closed".
    gripper: str = ""
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise SpecError(f"embodiment name {self.name!r} must be non-empty and contain no '/'")
        if not self.state or not self.actions:
            raise SpecError(f"embodiment {self.name!r}: needs at least one state and one action dim")
        if self.action_mode not in ACTION_MODES:
            raise SpecError(
                f"embodiment {self.name!r}: action_mode must be one of {ACTION_MODES}, got {self.action_mode!r}"
            )
        if self.control_hz <= 0:
            raise SpecError(f"embodiment {self.name!r}: control_hz must be > 0, got {self.control_hz}")
        for what, items in (("state", self.state), ("action", self.actions), ("camera", self.cameras)):
            names = [x.name for x in items]
            if len(set(names)) != len(names):
                raise SpecError(f"embodiment {self.name!r}: duplicate {what} names in {names}")

    @property
    def state_dim(self) -> int:
        return len(self.state)

    @property
    def action_dim(self) -> int:
        return len(self.actions)

    @property
    def camera_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.cameras)

    def frame_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Frame key -> (shape, dtype) of one frame of this embodiment."""
        shapes = {STATE: ((self.state_dim,), "float32"), ACTION: ((self.action_dim,), "float32")}
        for cam in self.cameras:
            shapes[image_key(cam.name)] = (cam.shape, "uint8")
        return shapes

    # ---- (de)serialization ----
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no infinity: store unbounded limits as None.
        for key in ("state", "actions"):
            for dim in d[key]:
                for lim in ("low", "high"):
                    if math.isinf(dim[lim]):
                        dim[lim] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Embodiment":
        known = {
            "name",
            "state",
            "actions",
            "action",
            "cameras",
            "camera",
            "control_hz",
            "action_mode",
            "gripper",
            "description",
        }
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"embodiment: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")

        def dims(items, what):
            out = []
            for it in items or ():
                if isinstance(it, str):
                    it = {"name": it}
                it = dict(it)
                for lim, default in (("low", -math.inf), ("high", math.inf)):
                    if it.get(lim) is None:
                        it[lim] = default
                out.append(Dim(**it))
            return tuple(out)

        try:
            return cls(
                name=d["name"],
                state=dims(d.get("state"), "state"),
                actions=dims(d.get("actions", d.get("action")), "action"),
                cameras=tuple(Camera(**c) for c in d.get("cameras", d.get("camera", ())) or ()),
                control_hz=float(d.get("control_hz", 20.0)),
                action_mode=d.get("action_mode", "joint_position"),
                gripper=d.get("gripper", ""),
                description=d.get("description", ""),
            )
        except KeyError as e:
            raise SpecError(f"embodiment: missing required key {e}") from None
        except TypeError as e:
            raise SpecError(f"embodiment {d.get('name')!r}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> "Embodiment":
        d = read_toml(path, "embodiment file")
        try:
            return cls.from_dict(d)
        except SpecError as e:
            raise SpecError(f"{path}: {e}") from None


class PolicyLike(Protocol):
    """What evaluation and the control loop drive: a checkpoint policy, a remote client, or a scripted expert.

    `obs` holds the frame keys of one embodiment (images uint8 HxWx3, `observation/state`
    float32 [s]) plus `task` (the instruction) and `embodiment` (its name).
    `infer` returns at least {"actions": float32 [h, a]}: a chunk of h actions in the
    embodiment's own units, the first one meant for the current step.
    """

    def reset(self) -> None: ...

    def infer(self, obs: dict) -> dict: ...
