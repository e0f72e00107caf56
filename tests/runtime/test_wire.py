import msgpack
import numpy as np
import pytest

from vla_client.wire import WireError, packb, unpackb  # also importable as vla.runtime.wire


def test_roundtrip_arrays_scalars_and_nesting():
    obs = {
        "observation/state": np.arange(4, dtype=np.float32),
        "img": np.zeros((2, 3, 3), np.uint8),
        "n": np.int64(7),
        "nested": {"x": np.ones((2, 2), np.float64)},
        "prompt": "pick",
        "flag": True,
    }
    back = unpackb(packb(obs))
    assert back["prompt"] == "pick" and back["flag"] is True and back["n"] == 7 and back["n"].dtype == np.int64
    for k in ("observation/state", "img"):
        assert back[k].dtype == obs[k].dtype and np.array_equal(back[k], obs[k])
    assert np.array_equal(back["nested"]["x"], obs["nested"]["x"])


def test_layout_is_openpis_bytes_keys():
    raw = msgpack.unpackb(packb({"a": np.zeros(2, np.float32)}), raw=False)
    assert set(raw["a"]) == {b"__ndarray__", b"data", b"dtype", b"shape"}
    assert raw["a"][b"dtype"] == "<f4" and raw["a"][b"shape"] == [2]


def test_str_keys_from_other_clients_are_accepted():
    msg = msgpack.packb(
        {"a": {"__ndarray__": True, "data": np.ones(3, np.int16).tobytes(), "dtype": "<i2", "shape": [3]}}
    )
    assert np.array_equal(unpackb(msg)["a"], np.ones(3, np.int16))


@pytest.mark.parametrize(
    "bad,match",
    [
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, "refused"),
        ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<c16", b"shape": [1]}, "refused"),
        ({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]}, "needs 8 bytes, got 7"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "non-negative"),
        ({b"__ndarray__": True, b"data": b"", b"dtype": "nonsense", b"shape": [0]}, "dtype"),
    ],
)
def test_hostile_arrays_are_refused(bad, match):
    with pytest.raises(WireError, match=match):
        unpackb(msgpack.packb({"k": bad}, use_bin_type=True))


def test_object_arrays_are_never_sent_and_garbage_is_a_wire_error():
    with pytest.raises(WireError, match="refused"):
        packb({"x": np.array([object()], dtype=object)})
    with pytest.raises(WireError, match="not a msgpack message"):
        unpackb(b"\xc1\xc1\xc1")
    with pytest.raises(WireError, match="over the limit"):
        unpackb(packb({"x": np.zeros(100, np.uint8)}), max_bytes=50)


def test_robot_side_modules_never_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, vla_client, vla.runtime.client, vla.runtime.wire, vla.runtime.run, vla.runtime.control, "
        "vla.runtime.robot; bad = [m for m in ('torch', 'mujoco', 'transformers', 'vla.model') if m in sys.modules]; "
        "assert not bad, bad"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
