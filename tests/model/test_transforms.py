import dataclasses

import numpy as np
import pytest

from vla.data.stats import KeyStats
from vla.model.text import TextTokenizer
from vla.model.transforms import Transforms, delta_dims
from vla.spec import ACTION, STATE, Dim, Embodiment, SpecError

ARM = Embodiment(
    name="arm",
    state=(Dim("j1", "rad"), Dim("j2", "rad"), Dim("gripper", "1", 0.0, 1.0)),
    actions=(Dim("j1", "rad"), Dim("j2", "rad"), Dim("gripper", "1", 0.0, 1.0)),
)


def _stats(mean, std):
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return KeyStats(
        count=10, mean=mean, std=std, min=mean - 3 * std, max=mean + 3 * std, q01=mean - 2 * std, q99=mean + 2 * std
    )


def _tf(mode="zscore", delta=True, emb=ARM):
    stats = {
        emb.name: {STATE: _stats([0.1, -0.2, 0.5], [0.5, 0.4, 0.5]), ACTION: _stats([0.3, -0.1, 0.5], [0.6, 0.3, 0.5])}
    }
    text = TextTokenizer.train(["touch the red target"], 64)
    return Transforms(
        {emb.name: emb}, stats, mode, text, image_size=8, cameras=1, max_tokens=8, horizon=4, delta_actions=delta
    )


def test_delta_dims_are_position_commands_with_a_matching_state_dim():
    ai, si = delta_dims(ARM)
    assert ai.tolist() == [0, 1] and si.tolist() == [0, 1]  # the gripper stays absolute
    # Commands in another mode, or without a state dim of the same name and unit, are never deltas.
    assert len(delta_dims(dataclasses.replace(ARM, action_mode="joint_delta"))[0]) == 0
    renamed = dataclasses.replace(ARM, state=(Dim("q1", "rad"), Dim("j2", "m"), Dim("gripper", "1")))
    assert len(delta_dims(renamed)[0]) == 0


@pytest.mark.parametrize("mode", ["zscore", "quantile"])
def test_delta_actions_are_relative_to_the_start_state_and_round_trip(mode):
    tf = _tf(mode)
    rng = np.random.default_rng(0)
    state = np.array([0.7, -0.4, 1.0], np.float32)
    chunk = (state + 0.05 * rng.standard_normal((4, 3))).astype(np.float32)
    chunk[:, 2] = 1.0
    y = tf.normalize_actions(chunk[None], ["arm"], [state])[0]
    scale = tf.stats["arm"][ACTION].scale(mode)
    np.testing.assert_allclose(y[:, :2], (chunk[:, :2] - state[:2]) / scale[:2], rtol=1e-5)
    np.testing.assert_allclose(y[:, 2], tf.stats["arm"][ACTION].normalize(chunk, mode)[:, 2], rtol=1e-5)
    # Holding the current pose is zero in the joint dims, wherever the arm is.
    still = tf.normalize_actions(np.repeat(state[None, None], 4, 1), ["arm"], [state])[0]
    np.testing.assert_allclose(still[:, :2], 0.0, atol=1e-6)
    import torch

    back = tf.to_actions(torch.from_numpy(y[None]), ["arm"], [state])[0]
    np.testing.assert_allclose(back, chunk, atol=1e-5)


def test_delta_actions_need_the_state_and_absolute_ones_do_not():
    import torch

    y = torch.zeros(1, 4, 3)
    with pytest.raises(SpecError, match="'arm'.*state"):
        _tf().to_actions(y, ["arm"])
    out = _tf(delta=False).to_actions(y, ["arm"])[0]
    np.testing.assert_allclose(out[0], [0.3, -0.1, 0.5], atol=1e-5)  # zero -> the action mean
