"""ALOHA sim (the `gym-aloha` package: transfer-cube, insertion) behind the built-in env interface.

Robot name "aloha"; embodiment envs/embodiments/aloha.toml: 14-D joint positions with ALOHA's
normalized gripper (0 = closed, 1 = open), as gym-aloha and the LeRobot ALOHA datasets use.
gym-aloha's own observation renders three 480x640 images per step; this adapter skips that and
renders its cameras at the requested size with shadows off, and gives the cube's (or the peg's and
the socket's) position as the training-only scene facts (`environment_state`). Success is gym-aloha's
top reward (4: transferred and lifted / peg in socket). Actions that make the physics diverge (dm_control's
PhysicsError) end the episode there as a failure (truncated), not as an error.
"""

from __future__ import annotations

import types

import gymnasium as gym
import numpy as np

from vla.resources import load_embodiment
from vla.sim.env import check_action
from vla.sim.external.common import CameraRenderer, action_space, observation_space, strip_render_costs
from vla.sim.robots import ENVS_DIR
from vla.spec import STATE, TASK, SpecError, image_key

TASKS = {"transfer-cube": "transfer_cube", "insertion": "insertion"}
INSTRUCTIONS = {
    "transfer-cube": "pick up the red cube with the right arm and hand it to the left arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}
CAMERAS = {"top": "top", "wrist_left": "left_wrist", "wrist_right": "right_wrist"}
STEPS = {"transfer-cube": 400, "insertion": 400}  # as in ACT's sim episodes (8 s at 50 Hz)


def list_tasks() -> list[str]:
    return sorted(TASKS)


def embodiment(image_size: int = 96):
    from dataclasses import replace

    from vla.spec import Camera

    emb = load_embodiment(ENVS_DIR / "embodiments" / "aloha.toml")
    return replace(emb, cameras=tuple(Camera(c.name, image_size, image_size) for c in emb.cameras))


def _lean_observation(self, physics):
    """gym-aloha's observation without its three full-size renders."""
    return {
        "qpos": self.get_qpos(physics),
        "qvel": self.get_qvel(physics),
        "env_state": self.get_env_state(physics),
        "images": {},
    }


class AlohaSimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    reward_stages = True  # gym-aloha's rewards 0-4 are stages (touched, lifted, ... done): vla eval counts

    def __init__(
        self,
        task: str = "transfer-cube",
        image_size: int = 96,
        render_mode: str | None = "rgb_array",
        max_steps: int | None = None,
    ):
        if task not in TASKS:
            raise SpecError(f"unknown ALOHA task {task!r}; valid tasks are {list_tasks()}")
        from gym_aloha.env import AlohaEnv

        self.task_name = task
        inner = AlohaEnv(task=TASKS[task], obs_type="pixels_agent_pos")
        self._dm = inner._env  # the dm_control Environment
        self._dm.task.get_observation = types.MethodType(_lean_observation, self._dm.task)
        self.physics = self._dm.physics
        self.model, self.data = self.physics.model.ptr, self.physics.data.ptr
        strip_render_costs(self.model)
        self.embodiment = embodiment(image_size)
        self.render_mode = render_mode
        self._cams = CameraRenderer(self.model, (image_size, image_size), CAMERAS)
        self.bench_cameras = list(CAMERAS.values())
        self.max_steps = max_steps or STEPS[task]
        self.action_space = action_space(self.embodiment)
        self.observation_space = observation_space(self.embodiment)
        self.instruction = INSTRUCTIONS[task]
        self.episode_id = 0
        self.steps = 0

    def observe(self) -> dict:
        obs = {image_key(c): self._cams.render(self.data, c) for c in CAMERAS}
        st = np.asarray(self._dm.task.get_qpos(self.physics), np.float32)
        obs[STATE] = np.clip(st, self.observation_space[STATE].low, self.observation_space[STATE].high)
        obs[TASK] = self.instruction
        self._last_obs = obs
        return obs

    def environment_state(self) -> np.ndarray:
        """Training-only scene facts (vla.spec.ENV_STATE_LAYOUT), as the built-in tasks give them: the
        object's xyz, then the goal's. Transfer-cube: the cube, twice (what the policy must find);
        insertion: the peg (the right arm's), then the socket (the left arm's). Never observed."""
        free = np.asarray(self._dm.task.get_env_state(self.physics), np.float32)  # 7 per free body
        goal = free[:3] if self.task_name == "transfer-cube" else free[7:10]
        return np.concatenate([free[:3], goal])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        from gym_aloha.tasks.sim import BOX_POSE
        from gym_aloha.utils import sample_box_pose, sample_insertion_pose

        s = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
        BOX_POSE[0] = (
            sample_box_pose(s) if self.task_name == "transfer-cube" else np.concatenate(sample_insertion_pose(s))
        )
        self._dm.task.random.seed(s)
        self._dm.reset()
        self.steps = 0
        self.episode_id += 1
        return self.observe(), {"success": False, "task": self.instruction}

    def step(self, action):
        from dm_control.rl.control import PhysicsError

        a = check_action(action, self.action_space.shape, f"aloha/{self.task_name}")
        a = np.clip(a, self.action_space.low, self.action_space.high)
        try:
            ts = self._dm.step(a)
        except PhysicsError as e:
            # The actions drove the simulation unstable (dm_control refuses to go on): the episode
            # ends there as a failure, as it would on a real robot; it is not an evaluation error
            # to leave out of the count. The next reset() starts a valid state again.
            self.steps += 1
            info = {"success": False, "task": self.instruction, "physics_error": str(e).splitlines()[0]}
            return self._last_obs, 0.0, False, True, info
        self.steps += 1
        reward = float(ts.reward or 0.0)
        success = reward >= self._dm.task.max_reward
        truncated = self.steps >= self.max_steps and not success
        return (
            self.observe(),
            reward,
            bool(success),
            bool(truncated),
            {"success": bool(success), "task": self.instruction},
        )

    def render(self):
        return self._cams.render(self.data, "top") if self.render_mode == "rgb_array" else None

    def make_expert(self, *, noise: float = 0.0, seed: int | None = None):
        from vla.sim.external.aloha_experts import AlohaExpert

        return AlohaExpert(self, noise=noise, seed=seed)

    def close(self):
        self._cams.close()


def make(task: str, *, image_size: int = 96, **kwargs) -> AlohaSimEnv:
    return AlohaSimEnv(task, image_size=image_size, **kwargs)
