import pytest

from vla.runtime.launch import launch_dir, load_launch
from vla.runtime.robot import Robot, RobotConfig, SimRobotClient, make_robot
from vla.runtime.safety import per_dim
from vla.spec import SpecError

LAUNCH_FILES = sorted(p.stem for p in launch_dir().glob("*.toml"))


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_launch_file_parses_and_names_real_dims(name):
    from vla.sim.registry import embodiment_for
    from vla.runtime.sim_robot import env_pair

    cfg = load_launch(name)
    assert cfg.control.hz > 0 and cfg.chunking.mode in ("sync", "async", "rtc")
    if cfg.robot.type == "sim":
        emb = embodiment_for(env_pair(cfg.robot.env)[0], cfg.robot.image_size)
        per_dim(cfg.safety.max_velocity, emb, "max_velocity")  # names match the embodiment's actions
        per_dim(cfg.safety.max_acceleration, emb, "max_acceleration")


def test_every_builtin_robot_has_a_sim_launch_file():
    from vla.sim.robots import ROBOTS

    robots = {load_launch(n).robot.env.split("/")[1].split("-")[0].lower() for n in LAUNCH_FILES
              if load_launch(n).robot.type == "sim"}
    assert set(ROBOTS) <= robots


def test_overrides_and_errors_name_the_key():
    cfg = load_launch("arm7-reach-sim", {"control": {"mode": "sync", "duration_s": 3},
                                        "policy": {"checkpoint": "", "url": "ws://127.0.0.1:1"}})
    assert cfg.chunking.mode == "sync" and cfg.control.duration_s == 3 and cfg.policy.url
    with pytest.raises(SpecError, match=r"\[control\] unknown keys \['speed'\]"):
        load_launch({"policy": {"url": "ws://x:1"}, "control": {"speed": 2}})
    with pytest.raises(SpecError, match="exactly one of checkpoint"):
        load_launch({"policy": {}})
    with pytest.raises(SpecError, match="mode: expected one of"):
        load_launch({"policy": {"url": "ws://x:1"}, "control": {"mode": "turbo"}})
    with pytest.raises(SpecError, match="launch file not found"):
        load_launch("no-such-launch")


def test_user_driver_is_loaded_by_name():
    robot = make_robot(RobotConfig(driver="vla.runtime.robot:SimRobotClient", type="driver",
                                   options={"host": "127.0.0.1", "port": 1}))
    assert isinstance(robot, SimRobotClient) and isinstance(robot, Robot) and robot.port == 1
    with pytest.raises(SpecError, match="expected a subclass of vla.runtime.robot.Robot"):
        make_robot(RobotConfig(type="driver", driver="vla.runtime.wire:WireError"))
    with pytest.raises(SpecError, match="cannot import"):
        make_robot(RobotConfig(type="driver", driver="no_such_module:Arm"))
    with pytest.raises(SpecError, match="bad options"):
        make_robot(RobotConfig(type="driver", driver="vla.runtime.robot:SimRobotClient", options={"colour": 1}))
