import math

import numpy as np
import pytest

from vla.runtime.safety import SafetyConfig, SafetyFilter, describe_interventions
from vla.spec import SpecError

from helpers import tiny_embodiment

EMB = tiny_embodiment("s", s=3, a=3)  # limits [-5, 5]


def test_nonfinite_and_bad_shape_are_rejected_and_hold():
    f = SafetyFilter(EMB, SafetyConfig(), dt=0.02, initial=np.zeros(3))
    assert np.array_equal(f.filter(0, [1, 1, 1]), [1, 1, 1])
    for bad in ([np.nan, 0, 0], [0, np.inf, 0]):
        assert np.array_equal(f.filter(1, bad), [1, 1, 1])
    assert np.array_equal(f.filter(2, [1, 2]), [1, 1, 1])
    assert f.counts["nonfinite"] == 2 and f.counts["bad_shape"] == 1
    assert [e.kind for e in f.events] == ["nonfinite", "nonfinite", "bad_shape"] and f.events[0].dims == [0]


def test_joint_velocity_and_acceleration_limits():
    f = SafetyFilter(
        EMB, SafetyConfig(max_velocity=1.0, max_acceleration=math.inf, limit_margin=0.5), dt=0.1, initial=np.zeros(3)
    )
    assert np.allclose(f.filter(0, [9, 0.05, -9]), [0.1, 0.05, -0.1])  # 1 unit/s over 0.1 s
    assert f.counts["velocity_limit"] == 1 and f.counts["position_limit"] == 1
    f.last = np.array([4.4, 0, 0])
    assert np.allclose(f.filter(1, [9, 0, 0]), [4.5, 0, 0])  # 5 - margin
    g = SafetyFilter(EMB, SafetyConfig(max_acceleration={"a0": 10.0, "default": 1000.0}), dt=0.1, initial=np.zeros(3))
    out = g.filter(0, [1, 1, 0])
    assert np.allclose(out, [0.1, 1, 0]) and g.counts["acceleration_limit"] == 1  # a0: v <= 10 * 0.1 = 1 unit/s


def test_limit_margin_spares_the_gripper():
    """The margin keeps joints inside their limits; a gripper's 0 (open) / 1 (closed) pass untouched."""
    from vla.spec import Dim, Embodiment

    emb = Embodiment(
        name="g",
        state=EMB.state[:2],
        actions=(Dim("j", "rad", -1.0, 1.0), Dim("gripper", "1", 0.0, 1.0)),
        cameras=EMB.cameras,
        control_hz=EMB.control_hz,
    )
    f = SafetyFilter(emb, SafetyConfig(limit_margin=0.01), dt=0.02, initial=[0.0, 0.0])
    for tick, (a, want) in enumerate((([0.5, 0.0], [0.5, 0.0]), ([0.5, 1.0], [0.5, 1.0]), ([1.0, 0.0], [0.99, 0.0]))):
        assert np.allclose(f.filter(tick, a), want)
    assert f.counts["position_limit"] == 1 and f.events[0].dims == [0]
    f.filter(3, [0.5, 1.002])  # a gripper command a hair past closed is clipped too, and counted by name
    assert f.counts["position_limit"] == 2 and f.by_dim == {"position_limit": {"j": 1, "gripper": 1}}


def test_interventions_are_described_by_kind_and_action_name():
    f = SafetyFilter(EMB, SafetyConfig(max_velocity=1.0), dt=0.1, initial=np.zeros(3))
    for tick in range(3):
        f.filter(tick, [9, 0, 9 if tick == 0 else 0])  # a0 past its limit and too fast each tick; a2 once
    assert f.by_dim == {"position_limit": {"a0": 3, "a2": 1}, "velocity_limit": {"a0": 3, "a2": 1}}
    assert (
        describe_interventions(f.counts, f.by_dim) == "6 (position limit 3: a0 3, a2 1; velocity limit 3: a0 3, a2 1)"
    )
    assert describe_interventions({"estop": 1, "watchdog_hold": 0}) == "1 (estop 1)"
    assert describe_interventions({"position_limit": 0}) == "0"


def test_config_errors_name_the_key():
    with pytest.raises(SpecError, match="max_velocity"):
        SafetyConfig(max_velocity=-1)
    with pytest.raises(SpecError, match="unknown action names"):
        SafetyFilter(EMB, SafetyConfig(max_velocity={"elbow": 1.0}), dt=0.1)
    with pytest.raises(SpecError, match="expected 3 values"):
        SafetyFilter(EMB, SafetyConfig(max_velocity=[1.0, 2.0]), dt=0.1)
