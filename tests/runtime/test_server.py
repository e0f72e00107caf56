"""The policy server: openpi protocol, API key, size limits, bad input, several clients."""

import threading
import urllib.request

import numpy as np
import pytest
from websockets.sync.client import connect

from vla.runtime.client import PolicyUnavailable, RemotePolicy, RemotePolicyError
from vla.runtime.server import PolicyServer, ServerConfig
from vla.runtime.wire import packb, unpackb

from runtime.conftest import StubPolicy, arm_a_obs


@pytest.fixture
def stub_server():
    srv = PolicyServer(StubPolicy(), ServerConfig(port=0, max_message_bytes=64 * 1024)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def ckpt_server(tiny_ckpt):
    from vla.runtime.policy import load_policy

    srv = PolicyServer(load_policy(tiny_ckpt), ServerConfig(port=0, api_key="s3cret")).start()
    yield srv
    srv.stop()


def _obs(n=3):
    return {"observation/state": np.zeros(n, np.float32), "task": "go"}


def test_metadata_first_then_actions_with_server_timing(stub_server):
    with connect(stub_server.url, compression=None, max_size=None) as ws:
        meta = unpackb(ws.recv())
        assert meta["policy_type"] == "stub" and meta["action_horizon"] == 10
        ws.send(packb(_obs()))
        out = unpackb(ws.recv())
        ws.send(packb(_obs()))
        out2 = unpackb(ws.recv())
    assert out["actions"].shape == (10, 3) and out["actions"].dtype == np.float32
    assert "infer_ms" in out["server_timing"] and "prev_total_ms" in out2["server_timing"]
    assert urllib.request.urlopen(f"http://127.0.0.1:{stub_server.port}/healthz", timeout=5).read() == b"OK\n"


def test_checkpoint_served_with_api_key_task_or_prompt(ckpt_server):
    with pytest.raises(PolicyUnavailable, match="HTTP 401"):
        RemotePolicy(ckpt_server.url)
    with pytest.raises(PolicyUnavailable, match="HTTP 401"):
        RemotePolicy(ckpt_server.url, api_key="wrong")
    assert ckpt_server.counters["refused"] >= 2
    with RemotePolicy(ckpt_server.url, api_key="s3cret") as p:
        assert p.metadata["policy_type"] == "pi0" and set(p.metadata["embodiments"]) == {"armA", "armB"}
        a = p.infer(arm_a_obs("task"))["actions"]
        b = p.infer(arm_a_obs("prompt"))["actions"]  # openpi's key for the instruction
        assert a.shape == b.shape == (6, 3) and np.isfinite(a).all()
        # RTC guide travels with the observation and is used by pi0.
        g = p.infer(arm_a_obs(), guide=np.full((6, 3), 0.3, np.float32), guide_weights=np.ones(6, np.float32))
        assert g["actions"].shape == (6, 3)
        # Wrong shape: an error naming the key; the same connection keeps working.
        bad = arm_a_obs()
        bad["observation/images/front"] = np.zeros((8, 8, 3), np.uint8)
        with pytest.raises(RemotePolicyError, match="'observation/images/front'"):
            p.infer(bad)
        with pytest.raises(RemotePolicyError, match="'observation/state'"):
            p.infer({**arm_a_obs(), "observation/state": np.zeros(9, np.float32)})
        assert p.infer(arm_a_obs())["actions"].shape == (6, 3)


@pytest.mark.parametrize(
    "message,match",
    [
        (b"\xc1garbage", "not a msgpack message"),
        ("a text frame", "expected a binary msgpack observation"),
        (packb([1, 2, 3]), "expected a map of observation keys"),
        (packb({"observation/state": np.zeros(70_000, np.uint8)}), "over the limit"),
        (
            packb({"observation/state": np.zeros(3, np.float32), "guide": np.zeros((2, 3), np.float32)}),
            "'guide_weights'",
        ),
        (packb({"observation/state": np.zeros(5, np.float32)}), "'observation/state'"),
    ],
)
def test_bad_messages_get_an_error_naming_the_problem(stub_server, message, match):
    with connect(stub_server.url, compression=None, max_size=None) as ws:
        unpackb(ws.recv())
        ws.send(message)
        reply = ws.recv(timeout=5)
        assert isinstance(reply, str) and reply.startswith("error:")
        assert match in reply
        ws.send(packb(_obs()))  # and the connection still serves
        assert unpackb(ws.recv(timeout=5))["actions"].shape == (10, 3)


def test_one_client_sending_garbage_does_not_disturb_the_others(stub_server):
    errors, counts = [], []

    def good(n):
        try:
            with RemotePolicy(stub_server.url) as p:
                for _ in range(n):
                    assert p.infer(_obs())["actions"].shape == (10, 3)
            counts.append(n)
        except Exception as e:  # collected for the assertion below
            errors.append(e)

    def bad():
        with connect(stub_server.url, compression=None, max_size=None) as ws:
            ws.recv()
            for i in range(20):
                ws.send(b"\x00\xff" * (i + 1))
                assert ws.recv(timeout=5).startswith("error:")

    threads = [threading.Thread(target=good, args=(15,)) for _ in range(3)] + [threading.Thread(target=bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and counts == [15, 15, 15]
    assert stub_server.counters["errors"] >= 20


def test_unreachable_server_is_policy_unavailable():
    from vla.runtime.run import free_port

    with pytest.raises(PolicyUnavailable, match="cannot reach"):
        RemotePolicy(f"ws://127.0.0.1:{free_port()}", connect_timeout_s=1)


class CrashingServer(PolicyServer):
    """Serves normally until `crash` is set, then its serving coroutine fails (as a lost socket would)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.crash = threading.Event()

    async def _run(self):
        import asyncio

        serving = asyncio.ensure_future(super()._run())
        while not self.crash.is_set():
            await asyncio.sleep(0.01)
        serving.cancel()
        raise OSError("socket lost")


def test_a_crash_after_startup_is_logged_and_raised_not_lost(caplog):
    srv = CrashingServer(StubPolicy(), ServerConfig(port=0)).start()
    assert urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=5).read() == b"OK\n"
    assert srv.error is None
    srv.raise_if_failed()  # nothing yet
    with caplog.at_level("ERROR", logger="vla.runtime.server"):
        srv.crash.set()
        srv._thread.join(5)
    assert not srv._thread.is_alive()
    assert isinstance(srv.error, OSError) and "socket lost" in str(srv.error)
    assert any(r.levelname == "ERROR" and "crashed" in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="policy server crashed: OSError: socket lost"):
        _ = srv.url
    with pytest.raises(RuntimeError, match="policy server crashed: OSError: socket lost"):
        srv.stop()


def test_a_failed_start_raises_from_start():
    taken = PolicyServer(StubPolicy(), ServerConfig(port=0)).start()
    try:
        with pytest.raises(RuntimeError, match="policy server failed to start"):
            PolicyServer(StubPolicy(), ServerConfig(port=taken.port)).start()
    finally:
        taken.stop()
