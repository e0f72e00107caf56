"""The sim robot process: real-time physics served over a socket, driven like hardware."""

import threading
import time

import numpy as np
import pytest

from vla.runtime.robot import RobotError, SimRobotClient

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def sim_robot():
    from vla.runtime.sim_robot import SimRobotServer

    ready, box = threading.Event(), {}

    def serve():  # built and served in one thread: the GL context belongs to the thread that made it
        box["server"] = SimRobotServer("vla/Arm7-Reach-v0", port=0, image_size=32, seed=0)
        box["server"].serve_forever(max_seconds=30, ready=lambda p: ready.set())

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(30)
    return box["server"]


def test_observe_act_reset_stop(sim_robot):
    r = SimRobotClient("127.0.0.1", sim_robot.port, connect_timeout_s=5)
    r.connect()
    try:
        assert r.embodiment.name == "arm7" and r.embodiment.action_dim == 8
        obs = r.reset(seed=1)
        assert obs["observation/images/front"].shape == (32, 32, 3) and obs["observation/state"].shape == (8,)
        assert isinstance(obs["task"], str) and obs["done"] is False
        t0 = obs["sim_time"]
        target = obs["observation/state"].copy()
        target[0] += 0.3
        r.send_action(target)
        time.sleep(0.5)
        obs2 = r.observe()
        assert 0.3 < obs2["sim_time"] - t0 < 1.0  # physics runs on its own, in real time
        assert obs2["observation/state"][0] > obs["observation/state"][0] + 0.1
        r.send_action(np.full(8, np.nan, np.float32))  # refused; reported with the next reply
        with pytest.raises(RobotError, match="NaN"):
            r.observe()
        r.send_action(np.zeros(3, np.float32))
        with pytest.raises(RobotError, match="shape"):
            r.observe()
        r.stop()
        a = r.observe()["observation/state"]
        time.sleep(0.2)
        assert np.allclose(r.observe()["observation/state"][:7], a[:7], atol=0.02)  # holds where it was
    finally:
        r.close()
