import pytest

from vla.runtime.launch import launch_dir, load_launch
from vla.runtime.robot import Robot, RobotConfig, SimRobotClient, make_robot
from vla.runtime.safety import per_dim
from vla.spec import SpecError

LAUNCH_FILES = sorted(p.stem for p in launch_dir().glob("*.toml"))


def test_the_launch_files_are_found():  # an empty folder would make the test below pass with no cases
    assert {"arm5-reach-sim", "arm7-reach-sim", "bimanual-handover-sim", "real-robot-template"} <= set(LAUNCH_FILES)


@pytest.mark.parametrize("name", LAUNCH_FILES)
def test_every_launch_file_parses_and_names_real_dims(name):
    import tomllib

    from vla.runtime.sim_robot import env_pair
    from vla.sim.registry import embodiment_for

    raw = tomllib.loads((launch_dir() / f"{name}.toml").read_text())
    cfg = load_launch(name)
    # The file's own values arrive in the config (not the defaults).
    assert cfg.name == raw["name"] and cfg.control.hz == raw["control"]["hz"]
    assert cfg.chunking.mode == raw["control"]["mode"] and cfg.control.duration_s == raw["control"]["duration_s"]
    if cfg.robot.type != "sim":
        assert cfg.robot.driver == raw["robot"]["driver"]  # a user's robot: its dims are known only to its driver
        return
    emb = embodiment_for(env_pair(cfg.robot.env)[0], cfg.robot.image_size)
    names = [d.name for d in emb.actions]
    for what in ("max_velocity", "max_acceleration"):
        table = raw["safety"][what]
        named = sorted(set(table) - {"default"}) if isinstance(table, dict) else []
        assert set(named) <= set(names), f"{name}: [safety] {what} names {named}; {emb.name} has {names}"
        limits = per_dim(getattr(cfg.safety, what), emb, what)
        assert limits.shape == (len(names),) and (limits > 0).all()
        assert all(limits[names.index(n)] == table[n] for n in named)  # each named dim gets its own limit


def test_every_builtin_robot_has_a_sim_launch_file():
    from vla.sim.robots import ROBOTS

    robots = {
        load_launch(n).robot.env.split("/")[1].split("-")[0].lower()
        for n in LAUNCH_FILES
        if load_launch(n).robot.type == "sim"
    }
    assert set(ROBOTS) <= robots


def test_overrides_and_errors_name_the_key():
    cfg = load_launch(
        "arm7-reach-sim",
        {"control": {"mode": "sync", "duration_s": 3}, "policy": {"checkpoint": "", "url": "ws://127.0.0.1:1"}},
    )
    assert cfg.chunking.mode == "sync" and cfg.control.duration_s == 3 and cfg.policy.url
    with pytest.raises(SpecError, match=r"\[control\] unknown keys \['speed'\]"):
        load_launch({"policy": {"url": "ws://x:1"}, "control": {"speed": 2}})
    with pytest.raises(SpecError, match="exactly one of checkpoint"):
        load_launch({"policy": {}})
    with pytest.raises(SpecError, match="mode: expected one of"):
        load_launch({"policy": {"url": "ws://x:1"}, "control": {"mode": "turbo"}})
    with pytest.raises(SpecError, match="launch file not found"):
        load_launch("no-such-launch")
    assert load_launch({"policy": {"checkpoint": "ck", "noise_scale": 0}}).policy.noise_scale == 0
    with pytest.raises(SpecError, match=r"\[policy\] noise_scale: expected a number in \[0, 1\], got 2"):
        load_launch({"policy": {"checkpoint": "ck", "noise_scale": 2}})
    with pytest.raises(SpecError, match="vla serve --noise-scale"):
        load_launch({"policy": {"url": "ws://x:1", "noise_scale": 0.5}})


def test_user_driver_is_loaded_by_name():
    robot = make_robot(
        RobotConfig(driver="vla.runtime.robot:SimRobotClient", type="driver", options={"host": "127.0.0.1", "port": 1})
    )
    assert isinstance(robot, SimRobotClient) and isinstance(robot, Robot) and robot.port == 1
    with pytest.raises(SpecError, match="expected a subclass of vla.runtime.robot.Robot"):
        make_robot(RobotConfig(type="driver", driver="vla.runtime.wire:WireError"))
    with pytest.raises(SpecError, match="cannot import"):
        make_robot(RobotConfig(type="driver", driver="no_such_module:Arm"))
    with pytest.raises(SpecError, match="bad options"):
        make_robot(RobotConfig(type="driver", driver="vla.runtime.robot:SimRobotClient", options={"colour": 1}))
