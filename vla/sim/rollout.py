"""One episode of a policy in an env, executing action chunks open-loop for `replan_every` steps."""

from __future__ import annotations

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
) -> dict:
    """Roll out `policy` (PolicyLike) in `env` from reset(seed). Returns success, length, and (record) frames.

    The episode ends at the first success, unless `after_success` > 0: then it goes on for that
    many more steps (or to the time limit), so a recorded demonstration shows the robot settling
    at the goal instead of stopping at the edge of the success region.

    Recorded frames are store-ready: image keys, `observation/state`, and the executed `action`,
    plus ENV_STATE (training-only scene facts, taken with the observation) when the env has one;
    `video` keeps the first camera's images. A local torch policy's sampling noise comes from
    torch's global generator, which is seeded with `seed` for the episode (and restored after),
    so the same checkpoint on the same seeds gives the same rollouts.
    """
    torch = sys.modules.get("torch")  # only if a policy already brought it in; the sim itself needs none
    if torch is None:
        return _run_episode(
            env, policy, seed=seed, replan_every=replan_every, record=record, video=video, after_success=after_success
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _run_episode(
            env, policy, seed=seed, replan_every=replan_every, record=record, video=video, after_success=after_success
        )


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
    success, steps, length = False, 0, 0
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
        obs, _, terminated, truncated, info = env.step(action)
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
        "task": instruction,
        "frames": frames,
        "video": images,
        "embodiment": emb.name,
    }
