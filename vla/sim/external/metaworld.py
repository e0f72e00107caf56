"""Meta-World (the `metaworld` package, v3 tasks) behind the built-in env interface.

Robot name "metaworld", task names as Meta-World's ("reach-v3", "pick-place-v3", ...). The
embodiment (envs/embodiments/metaworld.toml) is Meta-World's Sawyer: state = hand xyz + gripper
opening, action = end-effector delta xyz + grab effort, in [-1, 1]. Each seed picks one of the
task's 50 goal/object configurations. The expert is Meta-World's own scripted policy for the
task; the instruction is written from the task name.
"""

from __future__ import annotations

import logging
import warnings

import gymnasium as gym
import numpy as np

from vla.resources import load_embodiment
from vla.sim.env import check_action
from vla.sim.external.common import CameraRenderer, action_space, observation_space, strip_render_costs
from vla.sim.robots import ENVS_DIR
from vla.spec import STATE, TASK, SpecError, image_key

log = logging.getLogger(__name__)

CAMERAS = {"front": "corner2", "wrist": "gripperPOV"}
INSTRUCTIONS = {
    "reach": "reach the goal position",
    "push": "push the puck to the goal",
    "pick-place": "pick up the puck and place it at the goal",
    "door-open": "open the door",
    "drawer-open": "open the drawer",
    "drawer-close": "close the drawer",
    "button-press-topdown": "press the button from the top",
    "peg-insert-side": "insert the peg into the hole from the side",
    "window-open": "open the window",
    "window-close": "close the window",
}
MT10 = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)


def list_tasks() -> list[str]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return sorted(ALL_V3_ENVIRONMENTS)


def instruction(task: str) -> str:
    base = task.rsplit("-v", 1)[0]
    return INSTRUCTIONS.get(base, base.replace("-", " "))


def embodiment(image_size: int = 96):
    from dataclasses import replace

    from vla.spec import Camera

    emb = load_embodiment(ENVS_DIR / "embodiments" / "metaworld.toml")
    return replace(emb, cameras=tuple(Camera(c.name, image_size, image_size) for c in emb.cameras))


class MetaWorldEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach-v3",
        image_size: int = 96,
        render_mode: str | None = "rgb_array",
        max_steps: int | None = None,
    ):
        import metaworld

        if task not in list_tasks():
            raise SpecError(f"unknown Meta-World task {task!r}; valid tasks are {list_tasks()}")
        self.task_name = task
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._bench = metaworld.MT1(task, seed=0)
            self._env = self._bench.train_classes[task]()
        self._tasks = self._bench.train_tasks
        self.embodiment = embodiment(image_size)
        self.render_mode = render_mode
        self.model, self.data = self._env.model, self._env.data
        strip_render_costs(self.model)
        self._cams = CameraRenderer(self.model, (image_size, image_size), CAMERAS, flip=("front",))
        self.bench_cameras = list(CAMERAS.values())
        self.max_steps = max_steps or int(self._env.max_path_length)
        self.metadata = {
            **self.metadata,
            "render_fps": int(round(1 / (self._env.frame_skip * self.model.opt.timestep))),
        }
        self.action_space = action_space(self.embodiment)
        self.observation_space = observation_space(self.embodiment)
        self.instruction = instruction(task)
        self.episode_id = 0
        self._raw = None

    def observe(self) -> dict:
        obs = {image_key(c): self._cams.render(self.data, c) for c in CAMERAS}
        st = np.asarray(self._raw[:4], np.float32)
        obs[STATE] = np.clip(st, self.observation_space[STATE].low, self.observation_space[STATE].high)
        obs[TASK] = self.instruction
        return obs

    def environment_state(self) -> np.ndarray:
        """Training-only scene facts (vla.spec.ENV_STATE_LAYOUT): the task's first object's xyz
        (Meta-World's observation[4:7]: the puck, the door handle, ...), then its goal (`_target_pos`,
        which Meta-World hides from the policy's observation). Never observed."""
        goal = np.asarray(self._env.unwrapped._target_pos, np.float32)
        return np.concatenate([np.asarray(self._raw[4:7], np.float32), goal])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        k = int(self.np_random.integers(len(self._tasks)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._env.set_task(self._tasks[k])
            self._raw, _ = self._env.reset(seed=seed)
        self.steps = 0
        self.episode_id += 1
        return self.observe(), {"success": False, "task": self.instruction}

    def step(self, action):
        a = check_action(action, self.action_space.shape, f"metaworld/{self.task_name}")
        a = np.clip(a, -1.0, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._raw, reward, _, _, info = self._env.step(a)
        self.steps += 1
        success = bool(info.get("success", 0.0) > 0.5)
        truncated = self.steps >= self.max_steps and not success
        return self.observe(), float(reward), success, truncated, {"success": success, "task": self.instruction}

    def render(self):
        return self._cams.render(self.data, "front") if self.render_mode == "rgb_array" else None

    def make_expert(self, *, noise: float = 0.0, seed: int | None = None):
        return MetaWorldExpert(self, noise=noise, seed=seed)

    def close(self):
        self._cams.close()


class MetaWorldExpert:
    """Meta-World's scripted policy for the task, with Gaussian noise on the xyz deltas."""

    def __init__(self, env: MetaWorldEnv, *, noise: float = 0.0, seed: int | None = None):
        from metaworld.policies import ENV_POLICY_MAP

        self.env, self.noise = env, float(noise)
        self.policy = ENV_POLICY_MAP[env.task_name]()
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs=None) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.asarray(self.policy.get_action(self.env._raw), np.float32)
        if self.noise > 0:
            a[:3] += self.noise * self.rng.standard_normal(3)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def infer(self, obs: dict) -> dict:
        return {"actions": self.act(obs)[None]}


def make(task: str, *, image_size: int = 96, **kwargs) -> MetaWorldEnv:
    return MetaWorldEnv(task, image_size=image_size, **kwargs)
