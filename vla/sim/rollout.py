"""One episode of a policy in an env: action chunks executed open-loop for `replan_every` steps, or
scheduled by a chunk executor (vla.runtime.chunking) with a simulated inference delay.

The simulated delay (the protocol of the RTC paper's simulated experiments): a chunk asked for
with the observation after step k is computed at once but handed over only `delay_steps` steps
later; meanwhile the env keeps stepping on what the executor has (the old plan, or a hold for
sync). The delay is in sim time, so it costs no wall-clock time and does not depend on the
machine's load.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from vla.spec import ACTION, EMBODIMENT, ENV_STATE, TASK, SpecError


class PolicyOutputError(SpecError):
    """A policy returned something that is not a chunk of actions for this embodiment."""


def _chunk(out, action_dim: int, who: str) -> np.ndarray:
    if not isinstance(out, dict) or "actions" not in out:
        raise PolicyOutputError(
            f"{who}: infer() must return a dict with 'actions', got {type(out).__name__}"
            + (f" with keys {sorted(out)}" if isinstance(out, dict) else "")
        )
    a = np.asarray(out["actions"], dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != action_dim or a.shape[0] == 0:
        raise PolicyOutputError(f"{who}: expected actions of shape [h, {action_dim}], got {a.shape}")
    return a


def run_episode(
    env,
    policy,
    *,
    seed: int,
    replan_every: int | None = None,
    record: bool = False,
    video: bool = False,
    after_success: int = 0,
    executor=None,
    delay_steps: int = 0,
) -> dict:
    """Roll out `policy` (PolicyLike) in `env` from reset(seed). Returns success, length, and (record) frames.

    executor: None (chunks run for `replan_every` steps, no delay), or a factory
    `executor(control_hz, delay_steps)` of a chunk executor (vla.runtime.chunking.SimExecutor)
    that decides which action runs at each step and what each request carries; chunks then
    arrive `delay_steps` steps after their observation (see the module docstring). The result
    adds `boundary_jumps` (per chunk switch after the first: the largest change of any action
    dim from the previous step's command) and `requests`.

    The episode ends at the first success, unless `after_success` > 0: then it goes on for that
    many more steps (or to the time limit), so a recorded demonstration shows the robot settling
    at the goal instead of stopping at the edge of the success region.

    Recorded frames are store-ready: image keys, `observation/state`, and the executed `action`,
    plus ENV_STATE (training-only scene facts, taken with the observation) when the env has one;
    `video` keeps the first camera's images. `max_reward` is the highest reward of any step (how far
    a failed episode got, where the env's rewards are stages, as gym-aloha's). A local torch
    policy's sampling noise comes from torch's global generator, which is seeded with `seed` for
    the episode (and restored after), so the same checkpoint on the same seeds gives the same
    rollouts.
    """
    if executor is None:
        if delay_steps:
            raise SpecError("a simulated inference delay needs a chunk executor (vla.runtime.chunking.SimExecutor)")
        run = functools.partial(
            _run_episode, env, policy, seed=seed, replan_every=replan_every, record=record, video=video,
            after_success=after_success,
        )  # fmt: skip
    else:
        if record or after_success:
            raise SpecError("a chunk executor's rollouts are for evaluation: no recording, no after_success")
        if delay_steps < 0:
            raise SpecError(f"delay_steps must be >= 0, got {delay_steps}")
        run = functools.partial(_run_scheduled, env, policy, executor, delay_steps, seed=seed, video=video)
    torch = sys.modules.get("torch")  # only if a policy already brought it in; the sim itself needs none
    if torch is None:
        return run()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return run()


def _run_episode(
    env, policy, *, seed: int, replan_every: int | None, record: bool, video: bool, after_success: int
) -> dict:
    emb = env.unwrapped.embodiment
    obs, info = env.reset(seed=seed)
    policy.reset()
    instruction = obs.get(TASK, "")
    frames: list[dict] = []
    images: list[np.ndarray] = []
    first_cam = f"observation/images/{emb.cameras[0].name}" if emb.cameras else None
    queue: list[np.ndarray] = []
    env_state = getattr(env.unwrapped, "environment_state", None) if record else None
    success, steps, length, best = False, 0, 0, None
    while True:
        if not queue:
            q = dict(obs)
            q[EMBODIMENT] = emb.name
            chunk = _chunk(policy.infer(q), emb.action_dim, type(policy).__name__)
            n = replan_every or max(1, len(chunk) // 2)
            queue = list(chunk[:n])
        action = queue.pop(0)
        if record:
            f = {k: v for k, v in obs.items() if k != TASK}
            f[ACTION] = action
            es = env_state() if env_state is not None else None  # the sim has not stepped since obs
            if es is not None:
                f[ENV_STATE] = np.asarray(es, np.float32)
            frames.append(f)
        if video and first_cam is not None:
            images.append(obs[first_cam])
        obs, reward, terminated, truncated, info = env.step(action)
        best = _best(best, reward)
        steps += 1
        if not success and info.get("success", False):
            success, length = True, steps
        if truncated or (terminated and not success) or (success and steps - length >= after_success):
            break
    if video and first_cam is not None:
        images.append(obs[first_cam])
    return {
        "success": success,
        "length": length if success else steps,
        "max_reward": best,
        "task": instruction,
        "frames": frames,
        "video": images,
        "embodiment": emb.name,
    }


def _best(best: float | None, reward) -> float | None:
    """The running maximum of an episode's rewards (None while the env gave none)."""
    if reward is None:
        return best
    r = float(reward)
    return r if best is None else max(best, r)


def hold_command(env) -> np.ndarray:
    """The action that keeps the robot where it is: its state, for a joint-position embodiment whose
    state is laid out as its action (every built-in robot)."""
    emb = env.unwrapped.embodiment
    if emb.action_mode != "joint_position" or emb.state_dim != emb.action_dim:
        raise SpecError(
            f"chunk scheduling with a delay holds the robot by commanding its state, which embodiment "
            f"{emb.name!r} ({emb.action_mode}, state {emb.state_dim} / action {emb.action_dim}) cannot: "
            "evaluate it without --mode / --delay-ms"
        )
    return np.asarray(env.unwrapped.state(), np.float32)


def _run_scheduled(env, policy, executor, delay_steps: int, *, seed: int, video: bool) -> dict:
    """A rollout whose steps are ticks of a chunk executor; see run_episode. Tick k sends action k;
    the observation after it is tick k's, and the chunk asked for with it is meant to start at tick
    k + 1 but arrives at tick k + 1 + delay_steps (the order of vla.runtime.control's loop)."""
    emb = env.unwrapped.embodiment
    obs, info = env.reset(seed=seed)
    policy.reset()
    ex = executor(float(emb.control_hz), delay_steps)
    low, high = env.action_space.low, env.action_space.high
    last = hold_command(env)
    first_cam = f"observation/images/{emb.cameras[0].name}" if emb.cameras else None
    images: list[np.ndarray] = []
    pending = None  # (arrival tick, chunk, observation tick)
    horizon, jumps, requests, first = 0, [], 0, True
    success, steps, length, k, best = False, 0, 0, 0, None
    while True:
        if pending is None and ex.want_request(k - 1):  # the observation of tick k - 1 (after its action)
            q = dict(obs)
            q[EMBODIMENT] = emb.name
            chunk = _chunk(policy.infer(q, **ex.request(k - 1, horizon)), emb.action_dim, type(policy).__name__)
            horizon, requests = len(chunk), requests + 1
            pending = (k + delay_steps, chunk, k - 1)
        switched = False
        if pending is not None and k >= pending[0]:
            switched = ex.on_chunk(pending[1], pending[2], k)
            pending = None
        raw = ex.action(k)
        action = last if raw is None else np.clip(raw, low, high).astype(np.float32)
        if switched:
            if not first:  # an episode's first chunk starts from rest: not a boundary
                jumps.append(float(np.max(np.abs(action - last))))
            first = False
        if video and first_cam is not None:
            images.append(obs[first_cam])
        obs, reward, terminated, truncated, info = env.step(action)
        best = _best(best, reward)
        last = action
        k += 1
        steps += 1
        if info.get("success", False):
            success, length = True, steps
        if success or truncated or terminated:
            break
    if video and first_cam is not None:
        images.append(obs[first_cam])
    return {
        "success": success,
        "length": length if success else steps,
        "max_reward": best,
        "task": obs.get(TASK, ""),
        "frames": [],
        "video": images,
        "embodiment": emb.name,
        "boundary_jumps": jumps,
        "requests": requests,
    }
