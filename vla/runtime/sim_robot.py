"""The simulated robot process (`vla sim-robot`): a MuJoCo env stepped in real time, served over TCP.

It behaves like hardware: physics advances on its own clock at `physics_hz` whatever the
controller does; the latest commanded action is the joint target; an observation renders the
cameras at the moment it is asked for. The control process reaches it through
`vla.runtime.robot.SimRobotClient`, exactly as it reaches a real robot through a driver.

Protocol: length-prefixed msgpack-numpy frames (vla.runtime.wire). On connect the server sends
`{"embodiment", "env", "physics_hz"}`; then request `{"cmd": ...}` -> reply:
    observe            -> {"obs": frame keys + task + success + done + sim_time}
    act {action}       -> no reply (a robot takes commands without a round trip); a bad action
                          (shape, NaN) is refused and the error comes back with the next reply
    reset {seed}       -> {"obs": ...}   (new scene; success/done cleared)
    stop               -> {"ok": True}   (hold the current joint positions at once)
A controller may open several connections (the control process reads observations on one
and commands on another, so a slow render never delays a command); requests are served in
arrival order by the one simulation thread. At most MAX_CLIENTS connections.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import time

import numpy as np

from vla.runtime.robot import DONE, SUCCESS
from vla.runtime.wire import WireError, recv_frame, send_frame, str_keys
from vla.spec import SpecError

log = logging.getLogger(__name__)

MAX_CLIENTS = 4
MAX_CATCH_UP = 10  # physics ticks run back to back when the process fell behind; beyond that time slips


def env_pair(env_id: str) -> tuple[str, str]:
    """'vla/Arm7-Reach-v0' -> ('arm7', 'reach') via the gymnasium registry."""
    import gymnasium as gym

    import vla.sim  # noqa: F401  (registers the ids)

    if env_id not in gym.registry:
        known = sorted(k for k in gym.registry if k.startswith("vla/"))
        raise SpecError(f"unknown sim env {env_id!r}; built-in ones are {known}")
    kw = gym.registry[env_id].kwargs
    return kw["robot"], kw["task"]


class SimRobotServer:
    def __init__(
        self,
        env_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 9100,
        image_size: int = 96,
        seed: int = 0,
        physics_hz: float = 100.0,
    ):
        from vla.sim import make_env  # first: importing vla.sim chooses offscreen GL before mujoco loads

        # isort: split
        import mujoco

        self._mj = mujoco
        self.env_id = env_id
        robot, task = env_pair(env_id)
        self.env = make_env(robot, task, image_size=image_size)
        self.sim = self.env.unwrapped
        self.emb = self.sim.embodiment
        self.physics_hz = float(physics_hz)
        self.nstep = max(1, round(1.0 / (self.physics_hz * self.sim.model.opt.timestep)))
        self.dt = self.nstep * self.sim.model.opt.timestep
        self.limit_s = self.sim.max_steps / self.emb.control_hz
        self.host, self.port = host, port
        self.pending_error = ""
        self.stats = {"physics_ticks": 0, "late_ticks": 0, "observations": 0, "actions": 0, "errors": 0}
        self._reset(seed)

    # ---- the simulated robot ----
    def _reset(self, seed: int | None) -> None:
        self.env.reset(seed=seed)
        self.target = self.sim.state().astype(np.float32)
        self.sim_time, self.success = 0.0, False

    def _step(self) -> None:
        self.sim.apply_action(self.target)
        self._mj.mj_step(self.sim.model, self.sim.data, nstep=self.nstep)
        self.sim_time += self.dt
        self.stats["physics_ticks"] += 1
        if not self.success and self.sim.task.success(self.sim.model, self.sim.data):
            self.success = True
            log.info("task succeeded at sim time %.2f s", self.sim_time)

    def _observe(self) -> dict:
        obs = dict(self.sim.observe())
        obs[SUCCESS] = bool(self.success)
        obs[DONE] = bool(self.success or self.sim_time >= self.limit_s)
        obs["sim_time"] = float(self.sim_time)
        self.stats["observations"] += 1
        return obs

    def handle(self, req) -> dict:
        if not isinstance(req, dict):
            raise SpecError(f"expected a request map, got {type(req).__name__}")
        req = str_keys(req)
        cmd = req.get("cmd")
        if cmd == "observe":
            return {"obs": self._observe()}
        if cmd == "act":
            from vla.sim.env import check_action

            try:
                self.target = check_action(
                    req.get("action"), (self.emb.action_dim,), f"sim robot {self.env_id} key 'action'"
                )
            except ValueError as e:
                self.stats["errors"] += 1
                self.pending_error = str(e)
            self.stats["actions"] += 1
            return None
        if cmd == "reset":
            seed = req.get("seed")
            self._reset(None if seed is None else int(seed))
            return {"obs": self._observe()}
        if cmd == "stop":
            self.target = self.sim.state().astype(np.float32)
            log.info("stop: holding the current joint positions")
            return {"ok": True}
        raise SpecError(f"key 'cmd': expected one of observe/act/reset/stop, got {cmd!r}")

    # ---- the socket side: one thread, physics on absolute deadlines between requests ----
    def serve_forever(self, *, max_seconds: float | None = None, ready=None) -> None:
        lsock = socket.create_server((self.host, self.port))
        self.port = lsock.getsockname()[1]
        lsock.setblocking(False)
        log.info(
            "sim robot %s (%s, physics %.0f Hz) on %s:%d",
            self.env_id,
            self.emb.name,
            self.physics_hz,
            self.host,
            self.port,
        )
        if ready is not None:
            ready(self.port)
        clients: list = []
        start = time.monotonic()
        next_t = start + self.dt
        try:
            while max_seconds is None or time.monotonic() - start < max_seconds:
                r, _, _ = select.select([lsock, *clients], [], [], max(0.0, next_t - time.monotonic()))
                if lsock in r:
                    conn, addr = lsock.accept()
                    conn.setblocking(True)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if len(clients) >= MAX_CLIENTS:
                        send_frame(conn, {"error": f"this sim robot already has {MAX_CLIENTS} connections"})
                        conn.close()
                    else:
                        clients.append(conn)
                        send_frame(
                            conn, {"embodiment": self.emb.to_dict(), "env": self.env_id, "physics_hz": self.physics_hz}
                        )
                        log.info("controller connected from %s", addr)
                for c in [c for c in clients if c in r]:
                    if self._serve_one(c) is None:
                        clients.remove(c)
                now = time.monotonic()
                behind = 0
                while now >= next_t and behind < MAX_CATCH_UP:
                    self._step()
                    next_t += self.dt
                    behind += 1
                if now >= next_t:  # fell too far behind: let simulated time slip instead of spiralling
                    skipped = math.floor((now - next_t) / self.dt) + 1
                    self.stats["late_ticks"] += skipped
                    next_t += skipped * self.dt
        finally:
            for c in clients:
                c.close()
            lsock.close()
            self.env.close()

    def _serve_one(self, client):
        try:
            req = recv_frame(client)
        except (ConnectionError, OSError):
            log.info("controller disconnected")
            client.close()
            return None
        except WireError as e:
            self.stats["errors"] += 1
            send_frame(client, {"error": str(e)})
            return client
        try:
            reply = self.handle(req)
        except (SpecError, ValueError, TypeError) as e:
            self.stats["errors"] += 1
            reply = {"error": str(e)}
        except Exception as e:  # a simulator failure: report it, keep serving
            log.exception("sim robot request failed")
            self.stats["errors"] += 1
            reply = {"error": f"{type(e).__name__}: {e}"}
        if reply is None:
            return client
        if self.pending_error:
            reply, self.pending_error = {"error": self.pending_error}, ""
        try:
            send_frame(client, reply)
        except OSError:
            client.close()
            return None
        return client
