"""A checkpoint written by an earlier vla loads and acts the same (tests/fixtures/checkpoints)."""

import numpy as np

from vla.model.interop.checkpoint import Checkpoint
from vla.runtime.policy import load_policy

from helpers import FIXTURES

OLD = FIXTURES / "checkpoints" / "pi0-grounding-v1"


def test_a_checkpoint_written_before_the_redesign_loads_and_acts_the_same():
    ck = Checkpoint(OLD)
    assert "grounding_tokens" in ck.config["policy"]["config"]  # the old flat layout, as written then
    assert ck.resolved.model.grounding.tokens == 2 and ck.resolved.model.grounding.keypoints == 2
    want = np.load(OLD / "expected.npz")
    obs = {
        "observation/state": want["state"],
        "observation/images/front": want["front"],
        "task": "do 1",
        "embodiment": "armA",
    }
    got = load_policy(OLD).infer(obs, noise=want["noise"])["actions"]
    np.testing.assert_allclose(got, want["actions"], atol=1e-5)
