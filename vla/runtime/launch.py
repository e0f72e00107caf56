"""Launch files (launch/<name>.toml): one deployment = policy + robot + loop + safety + recording.

    name = "arm7-reach-sim"
    [policy]   checkpoint = "runs/quickstart/ckpt"   (or url = "ws://127.0.0.1:8000", api_key_env = "VLA_API_KEY")
    [robot]    type = "sim", env = "vla/Arm7-Reach-v0", port = 0   (or type = "driver", driver = "pkg.mod:Class")
    [control]  hz = 50, mode = "rtc", execute_s = 0.5, duration_s = 20, episodes = 1
    [safety]   max_velocity = 3.0, max_acceleration = 60.0, watchdog_s = 0.5
    [record]   out = "runs/deploy/arm7-reach-sim"

Each section maps onto the frozen config of the component that owns it ([control] feeds both
ControlConfig and ChunkingConfig). Unknown keys are errors that list the known ones. Relative
paths are taken from the current directory (run from the repository root).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from vla.resources import content_dir, load_toml
from vla.runtime.chunking import ChunkingConfig
from vla.runtime.control import ControlConfig
from vla.runtime.robot import RobotConfig
from vla.runtime.safety import SafetyConfig
from vla.spec import SpecError


def launch_dir() -> Path:
    """The folder of built-in launch files (launch/, installed with the package)."""
    return content_dir("launch")


@dataclass(frozen=True)
class PolicyConfig:
    checkpoint: str = ""  # a checkpoint directory (served by a child `vla serve` when isolate = true)
    url: str = ""  # or a running policy server
    api_key_env: str = ""  # name of the environment variable holding the server's API key
    isolate: bool = True  # run a local checkpoint in its own server process (keeps torch off the loop's GIL)
    embodiment: str = ""  # the checkpoint's embodiment for this robot [default: the robot's name]
    device: str = ""  # cpu, cuda ... for a local checkpoint
    compile: bool = False  # torch.compile the pi0 denoising (compiled before the loop starts)
    noise_scale: float | None = None  # pi0 / pi0.5: override the checkpoint's initial-noise scale [0, 1]
    start_timeout_s: float = 180.0

    def __post_init__(self):
        if bool(self.checkpoint) == bool(self.url):
            raise SpecError(
                '[policy]: give exactly one of checkpoint = "<dir>" or url = "ws://host:port"; '
                f"got checkpoint={self.checkpoint!r}, url={self.url!r}"
            )
        if self.url and not self.url.startswith(("ws://", "wss://")):
            raise SpecError(f"[policy] url: expected ws://host:port, got {self.url!r}")
        if self.noise_scale is not None:
            if self.url:
                raise SpecError("[policy] noise_scale: set it where that server runs (vla serve --noise-scale)")
            n = self.noise_scale
            if isinstance(n, bool) or not isinstance(n, (int, float)) or not 0.0 <= n <= 1.0:
                raise SpecError(f"[policy] noise_scale: expected a number in [0, 1], got {n!r}")

    @property
    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise SpecError(f"[policy] api_key_env: environment variable {self.api_key_env!r} is not set")
        return key


@dataclass(frozen=True)
class RecordConfig:
    out: str = ""  # run folder: timing log, histogram, summary [default: runs/deploy/<name>]
    store: str = ""  # episode store [default: <out>/episodes]
    enabled: bool = True


@dataclass(frozen=True)
class LaunchConfig:
    name: str
    policy: PolicyConfig
    robot: RobotConfig = RobotConfig()
    control: ControlConfig = ControlConfig()
    chunking: ChunkingConfig = ChunkingConfig()
    safety: SafetyConfig = SafetyConfig()
    record: RecordConfig = field(default_factory=RecordConfig)

    @property
    def out(self) -> Path:
        return Path(self.record.out or f"runs/deploy/{self.name}")

    @property
    def store(self) -> Path:
        return Path(self.record.store) if self.record.store else self.out / "episodes"


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _build(cls, section: str, values: dict):
    try:
        return cls(**values)
    except TypeError as e:
        raise SpecError(f"[{section}]: {e}") from None


def _merge(base: dict, overrides: dict) -> dict:
    out = dict(base)
    for k, v in overrides.items():
        out[k] = _merge(out.get(k) or {}, v) if isinstance(v, dict) and k != "options" else v
    return out


def parse_launch(d: dict, *, source: str = "launch") -> LaunchConfig:
    sections = {"policy", "robot", "control", "safety", "record"}
    top = set(d) - sections - {"name", "description"}
    if top:
        raise SpecError(
            f"{source}: unknown keys {sorted(top)}; expected name, description and sections {sorted(sections)}"
        )
    for s in sections & set(d):
        if not isinstance(d[s], dict):
            raise SpecError(f"{source}: [{s}] must be a table, got {type(d[s]).__name__}")
    control = dict(d.get("control", {}))
    c_keys, k_keys = _fields(ControlConfig), _fields(ChunkingConfig)
    unknown = set(control) - c_keys - k_keys
    if unknown:
        raise SpecError(
            f"{source}: [control] unknown keys {sorted(unknown)}; expected some of {sorted(c_keys | k_keys)}"
        )
    for s, cls in (
        ("policy", PolicyConfig),
        ("robot", RobotConfig),
        ("safety", SafetyConfig),
        ("record", RecordConfig),
    ):
        unknown = set(d.get(s, {})) - _fields(cls)
        if unknown:
            raise SpecError(f"{source}: [{s}] unknown keys {sorted(unknown)}; expected some of {sorted(_fields(cls))}")
    if "policy" not in d:
        raise SpecError(f'{source}: missing the [policy] section (checkpoint = "<dir>" or url = "ws://host:port")')
    robot = dict(d.get("robot", {}))
    if "driver" in robot and "type" not in robot:
        robot["type"] = "driver"
    try:
        return LaunchConfig(
            name=str(d.get("name") or Path(source).stem),
            policy=_build(PolicyConfig, "policy", d["policy"]),
            robot=_build(RobotConfig, "robot", robot),
            control=_build(ControlConfig, "control", {k: v for k, v in control.items() if k in c_keys}),
            chunking=_build(ChunkingConfig, "control", {k: v for k, v in control.items() if k in k_keys}),
            safety=_build(SafetyConfig, "safety", d.get("safety", {})),
            record=_build(RecordConfig, "record", d.get("record", {})),
        )
    except SpecError as e:
        raise SpecError(f"{source}: {e}") from None


def load_launch(launch: str | Path | dict, overrides: dict | None = None) -> LaunchConfig:
    """A launch TOML path, a name in launch/, or a dict (same layout) -> LaunchConfig.

    `overrides` is a nested dict merged over it, e.g. {"control": {"mode": "sync"}}.
    """
    if isinstance(launch, dict):
        d, source = launch, "launch"
    else:
        d, p = load_toml(launch, "launch")
        source = str(p)
    return parse_launch(_merge(d, overrides or {}), source=source)
