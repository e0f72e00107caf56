"""SimEnv: one built-in robot doing one language-conditioned task, as a gymnasium env.

Observation (frame keys from vla.spec): `observation/images/<cam>` uint8 HxWx3 for each camera,
`observation/state` float32 [s] (joint positions + gripper per arm), `task` (the instruction).
Action: float32 [a], absolute joint position targets + gripper in [0, 1] per arm, clipped to the
embodiment's limits. Reward is 1.0 on the step the task succeeds; the episode then terminates.
"""

from __future__ import annotations

import atexit
import logging
import string
import weakref

import gymnasium as gym
import mujoco
import numpy as np

from vla.sim.ik import ArmIK
from vla.sim.robots import RobotConfig, get_robot
from vla.sim.tasks import get_task
from vla.spec import STATE, TASK, SpecError, image_key

log = logging.getLogger(__name__)
logging.getLogger("OpenGL").setLevel(logging.WARNING)  # PyOpenGL logs an INFO line per process otherwise

_OPEN = weakref.WeakSet()  # envs holding a GL context: closed at exit, before the GL module is torn down


def _close_all() -> None:
    for env in list(_OPEN):
        try:
            env.close()
        except Exception:  # the GL display may already be gone; nothing left to free then
            pass
    import gc

    gc.collect()  # renderers left in reference cycles free their GL contexts now, while EGL is still up


def track_renderer(env) -> None:
    """Close `env`'s renderers at exit, before EGL goes away (every env that renders calls this)."""
    # (Re-)registered after every renderer is made, so it runs before the EGL-terminating exit hooks
    # that mujoco and dm_control register when they create their first contexts.
    atexit.unregister(_close_all)
    atexit.register(_close_all)
    _OPEN.add(env)


TEXT_CHARSET = string.ascii_letters + string.digits + " .,'-_/:()"


class ActionError(ValueError):
    """An action handed to an env has the wrong shape or non-finite values."""


def check_action(action, shape: tuple[int, ...], who: str) -> np.ndarray:
    a = np.asarray(action, dtype=np.float32)
    if a.shape != shape:
        raise ActionError(f"{who}: expected action of shape {shape}, got {a.shape}")
    if not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a)).tolist()
        raise ActionError(f"{who}: action has NaN/Inf at dims {bad}")
    return a


class SimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        robot: str = "arm7",
        task: str = "reach",
        image_size: int = 96,
        render_mode: str | None = "rgb_array",
        max_steps: int | None = None,
        task_config=None,
    ):
        self.robot: RobotConfig = get_robot(robot)
        task_cls = get_task(task)
        if robot not in task_cls.robots:
            raise SpecError(f"task {task!r} is not defined for robot {robot!r}; it supports {list(task_cls.robots)}")
        if render_mode not in (None, "rgb_array"):
            raise SpecError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.task = task_cls(self.robot, task_config)
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.render_mode = render_mode
        self.embodiment = self.robot.embodiment(self.image_size)
        self.metadata = {**self.metadata, "render_fps": int(self.robot.control_hz)}

        spec = mujoco.MjSpec.from_file(str(self.robot.mjcf))
        # The robot's `home` keyframe covers the robot's joints only; task objects come after them in qpos.
        key = next((k for k in spec.keys if k.name == "home"), None)
        if key is None:
            raise SpecError(f"{self.robot.mjcf}: needs a keyframe named 'home'")
        self._home_qpos, self._home_ctrl = np.array(key.qpos), np.array(key.ctrl)
        key.delete()
        self.task.build(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.task.bind(self.model)
        self.n_substeps = max(1, int(round(1.0 / (self.robot.control_hz * self.model.opt.timestep))))
        self.max_steps = max_steps or self.task.max_steps()
        self.iks = [ArmIK(self.model, arm.joints, arm.site) for arm in self.robot.arms]
        m = self.model
        self._arm_qadr = [np.array([m.jnt_qposadr[m.joint(j).id] for j in arm.joints]) for arm in self.robot.arms]
        self._arm_act = [np.array([m.actuator(j).id for j in arm.joints]) for arm in self.robot.arms]
        self._arm_range = [m.jnt_range[[m.joint(j).id for j in arm.joints]].T for arm in self.robot.arms]
        self._finger_qadr = [np.array([m.jnt_qposadr[m.joint(f).id] for f in arm.fingers]) for arm in self.robot.arms]
        self._finger_act = [np.array([m.actuator(f).id for f in arm.fingers]) for arm in self.robot.arms]
        self._sites = [m.site(arm.site).id for arm in self.robot.arms]
        self._renderer = None
        self.episode_id = 0
        self.steps = 0

        emb = self.embodiment
        lo = np.array([d.low for d in emb.actions], np.float32)
        hi = np.array([d.high for d in emb.actions], np.float32)
        self.action_space = gym.spaces.Box(lo, hi, dtype=np.float32)
        slo = np.array([d.low for d in emb.state], np.float32)
        shi = np.array([d.high for d in emb.state], np.float32)
        spaces = {image_key(c.name): gym.spaces.Box(0, 255, c.shape, np.uint8) for c in emb.cameras}
        spaces[STATE] = gym.spaces.Box(slo, shi, dtype=np.float32)
        spaces[TASK] = gym.spaces.Text(max_length=256, min_length=1, charset=TEXT_CHARSET)
        self.observation_space = gym.spaces.Dict(spaces)

    # ---- robot state helpers (used by experts and tasks) ----
    def grip_pos(self, arm: int = 0) -> np.ndarray:
        return self.data.site_xpos[self._sites[arm]].copy()

    def grip_rot(self, arm: int = 0) -> np.ndarray:
        return self.data.site_xmat[self._sites[arm]].reshape(3, 3).copy()

    def arm_q(self, arm: int = 0) -> np.ndarray:
        return self.data.qpos[self._arm_qadr[arm]].copy()

    def gripper_state(self, arm: int = 0) -> float:
        a = self.robot.arms[arm]
        w = float(np.mean(self.data.qpos[self._finger_qadr[arm]]))
        return float(np.clip((a.finger_open - w) / (a.finger_open - a.finger_closed), 0.0, 1.0))

    def state(self) -> np.ndarray:
        parts = []
        for i in range(len(self.robot.arms)):
            parts += [self.arm_q(i), [self.gripper_state(i)]]
        s = np.concatenate(parts).astype(np.float32)
        return np.clip(s, self.observation_space[STATE].low, self.observation_space[STATE].high)

    # ---- rendering ----
    def _render_cam(self, cam: str) -> np.ndarray:
        if self._renderer is None:
            h, w = self.image_size
            try:
                self._renderer = mujoco.Renderer(self.model, h, w)
            except mujoco.FatalError as e:
                raise RuntimeError(
                    f"cannot create an offscreen OpenGL context ({e}). Set MUJOCO_GL=egl (software: Mesa "
                    "libEGL) in the environment before anything imports mujoco"
                ) from None
            track_renderer(self)
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render()

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self._render_cam(self.robot.cameras[0])

    def observe(self) -> dict:
        """The current observation (cameras, state, instruction), without stepping."""
        obs = {image_key(c): self._render_cam(c) for c in self.robot.cameras}
        obs[STATE] = self.state()
        obs[TASK] = self.task.instruction
        return obs

    def environment_state(self) -> np.ndarray | None:
        """The task's training-only scene facts now (vla.spec.ENV_STATE), or None. Never part of the
        observation: policies must not see it; vla.sim.rollout records it beside recorded frames."""
        return self.task.environment_state(self.model, self.data)

    # ---- gymnasium API ----
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[: len(self._home_qpos)] = self._home_qpos
        d.ctrl[: len(self._home_ctrl)] = self._home_ctrl
        noise = getattr(self.task.cfg, "home_noise", 0.0)
        if noise > 0:  # a random start pose: the arm's state alone must not give the goal away
            for qadr, act, (lo, hi) in zip(self._arm_qadr, self._arm_act, self._arm_range):
                q = d.qpos[qadr] + self.np_random.uniform(-noise, noise, len(qadr))
                q = np.where(hi > lo, np.clip(q, lo, hi), q)
                d.qpos[qadr] = q
                d.ctrl[act] = q
        self.task.reset(m, d, self.np_random)
        mujoco.mj_forward(m, d)
        # Let objects settle on the table with the arm holding its home pose.
        for _ in range(10):
            mujoco.mj_step(m, d)
        self.steps = 0
        self.episode_id += 1
        self._success = False
        return self.observe(), {"success": False, "task": self.task.instruction}

    def apply_action(self, a: np.ndarray) -> None:
        a = np.clip(a, self.action_space.low, self.action_space.high)
        i = 0
        for k, arm in enumerate(self.robot.arms):
            n = len(arm.joints)
            self.data.ctrl[self._arm_act[k]] = a[i : i + n]
            g = float(a[i + n])
            self.data.ctrl[self._finger_act[k]] = arm.finger_open + g * (arm.finger_closed - arm.finger_open)
            i += n + 1

    def step(self, action):
        a = check_action(action, self.action_space.shape, f"{self.robot.env_name}-{self.task.env_name}")
        self.apply_action(a)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.steps += 1
        success = self.task.success(self.model, self.data)
        self._success = self._success or success
        obs = self.observe()
        truncated = self.steps >= self.max_steps and not success
        info = {"success": bool(success), "task": self.task.instruction, "steps": self.steps}
        return obs, float(success), bool(success), bool(truncated), info

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
