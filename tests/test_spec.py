import math

import pytest

from vla.resources import load_embodiment
from vla.spec import ACTION, STATE, Embodiment, SpecError, image_key

from helpers import tiny_embodiment


def test_embodiment_dict_roundtrip_keeps_infinite_limits():
    emb = tiny_embodiment()
    emb2 = Embodiment.from_dict(emb.to_dict())
    assert emb2 == emb
    d = Embodiment.from_dict({"name": "x", "state": ["a"], "actions": [{"name": "b", "low": -1, "high": 1}]})
    assert d.state[0].low == -math.inf and d.actions[0].high == 1
    assert Embodiment.from_dict(d.to_dict()) == d


def test_builtin_toml_loads_and_frame_shapes():
    emb = load_embodiment("toy2d")
    shapes = emb.frame_shapes()
    assert shapes[STATE] == ((8,), "float32") and shapes[ACTION] == ((8,), "float32")
    assert shapes[image_key("front")] == ((96, 96, 3), "uint8")


def test_embodiment_errors_name_the_problem(tmp_path):
    with pytest.raises(SpecError, match="unknown embodiment 'nope'"):
        load_embodiment("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nstate = ["a"]\nactions = ["b"]\naction_mode = "teleport"\n')
    with pytest.raises(SpecError, match="action_mode must be one of"):
        load_embodiment(bad)
    bad.write_text('name = "x"\nstate = ["a", "a"]\nactions = ["b"]\n')
    with pytest.raises(SpecError, match="duplicate state names"):
        load_embodiment(bad)
    bad.write_text('name = "x"\nstate = ["a"]\nactions = ["b"]\nwheels = 3\n')
    with pytest.raises(SpecError, match="unknown keys"):
        load_embodiment(bad)
    bad.write_text("name = [")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_embodiment(bad)
