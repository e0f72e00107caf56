"""MuJoCo's warnings reach Python logging; no MUJOCO_LOG.TXT lands in the working folder."""

import logging

import mujoco
import pytest

import vla.sim  # noqa: F401  (installs the handler)

pytestmark = pytest.mark.sim

UNSTABLE = '<mujoco><worldbody><body><freejoint/><geom size=".1"/></body></worldbody></mujoco>'


def test_an_unstable_simulation_warns_through_logging_not_a_file(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    model = mujoco.MjModel.from_xml_string(UNSTABLE)
    data = mujoco.MjData(model)
    data.qvel[:] = 1e12  # MuJoCo resets the state and warns
    with caplog.at_level(logging.WARNING, logger="vla.sim.mujoco"):
        mujoco.mj_step(model, data)
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert any("Nan, Inf or huge value" in r.getMessage() for r in caplog.records)
