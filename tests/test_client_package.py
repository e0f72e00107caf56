"""The robot-side client as its own distribution (packages/vla-client, import name `vla_client`).

Fast: it imports no torch / mujoco / transformers / vla, declares only numpy + msgpack + websockets,
and `vla.runtime.client` / `vla.runtime.wire` re-export it. Slow: `pip install ./packages/vla-client`
into a fresh venv installs nothing else, and that venv's python drives `vla serve` on a tiny checkpoint.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "packages" / "vla-client"
DEPS = {"numpy", "msgpack", "websockets"}
HEAVY = ("torch", "mujoco", "transformers", "vla")


def _req_name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower()


def test_import_loads_no_heavy_stack():
    code = (
        "import json, sys, vla_client; "
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=PKG)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


def test_declares_only_numpy_msgpack_websockets_with_the_projects_bounds():
    client = tomllib.loads((PKG / "pyproject.toml").read_text())["project"]
    main = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert client["name"] == "vla-client" and client["requires-python"] == main["requires-python"]
    assert {_req_name(r) for r in client["dependencies"]} == DEPS
    main_reqs = {_req_name(r): r.replace(" ", "") for r in main["dependencies"]}
    for req in client["dependencies"]:
        assert req.replace(" ", "") == main_reqs[_req_name(req)], f"{req!r} differs from the main pyproject"


def test_vla_runtime_reexports_the_client():
    import vla.runtime.client
    import vla.runtime.wire
    import vla_client

    for name in ("RemotePolicy", "PolicyUnavailable", "RemotePolicyError"):
        assert getattr(vla.runtime.client, name) is getattr(vla_client, name)
    for name in vla.runtime.wire.__all__:
        assert getattr(vla.runtime.wire, name) is getattr(vla_client.wire, name)
    assert set(vla_client.__all__) == set(vla.runtime.client.__all__) | set(vla.runtime.wire.__all__)
    assert vla_client.unpackb(vla_client.packb({"x": 1})) == {"x": 1}


# ---- slow: a fresh venv with only the client in it drives `vla serve` ----

# pip's messages when the package index cannot be reached (CI without network): skip, not fail.
_NO_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|Max retries exceeded|"
    r"No matching distribution found|Could not find a version that satisfies"
)

CLIENT = r"""
import importlib.util, json, sys
import numpy as np
from vla_client import RemotePolicy, RemotePolicyError

with RemotePolicy(f"ws://127.0.0.1:{sys.argv[1]}", timeout_s=60) as policy:
    meta = policy.metadata
    obs = {"observation/state": np.zeros(4, np.float32), "task": "reach the red target", "embodiment": "armA",
           "observation/images/front": np.zeros((16, 16, 3), np.uint8),
           "observation/images/wrist": np.zeros((16, 16, 3), np.uint8)}
    out = policy.infer(obs)
    try:
        policy.infer({**obs, "observation/state": np.zeros(9, np.float32)})
        err = ""
    except RemotePolicyError as e:
        err = str(e)
print(json.dumps({"policy_type": meta["policy_type"], "horizon": meta["action_horizon"],
                  "shape": list(out["actions"].shape), "dtype": str(out["actions"].dtype), "error": err,
                  "importable": [m for m in ("torch", "mujoco", "transformers", "vla")
                                 if importlib.util.find_spec(m) is not None]}))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory):
    """A fresh venv with `pip install ./packages/vla-client` (a copy: pip builds in the source tree)."""
    root = tmp_path_factory.mktemp("client-venv")
    src = shutil.copytree(PKG, root / "vla-client", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=root,
    )
    if r.returncode != 0:
        if _NO_NETWORK.search(r.stdout + r.stderr):
            pytest.skip(
                "cannot install vla-client's dependencies (numpy, msgpack, websockets) into a fresh venv: "
                "the package index is not reachable:\n" + (r.stdout + r.stderr)[-1500:]
            )
        pytest.fail(f"pip install {src} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return py


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A pi0 checkpoint trained for 2 steps on one tiny embodiment (armA: state 4, actions 3, 2 cameras)."""
    from vla.config import load_preset
    from vla.data import EpisodeStore
    from vla.data.synthetic import write_synthetic
    from vla.train.trainer import train

    from helpers import tiny_embodiment
    from train.conftest import write_preset

    root = tmp_path_factory.mktemp("client-ckpt")
    emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16), ("wrist", 16, 16)))
    write_synthetic(EpisodeStore.create(root / "armA", [emb]), emb, episodes=2, length=12, seed=0)
    return train(load_preset(write_preset(root / "p.toml")), [str(root / "armA")], root / "ck", steps=2, progress=False)


@pytest.fixture
def vla_serve(tiny_checkpoint, tmp_path):
    """`vla serve <ckpt>` in the project's venv, as its own process; yields the port once /healthz answers."""
    from vla.runtime.run import free_port

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from vla.cli import main; main()", "serve", str(tiny_checkpoint), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vla serve exited with {proc.returncode}:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vla serve did not come up in 60 s:\n{(tmp_path / 'serve.log').read_text()[-3000:]}")
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_fresh_venv_has_no_torch_and_drives_vla_serve(client_venv, vla_serve, tmp_path):
    r = subprocess.run(
        [str(client_venv), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(r.stdout)}
    assert "vla-client" in installed and not installed & {"torch", "mujoco", "transformers", "vla"}, installed
    assert installed <= {"vla-client", *DEPS, "pip", "setuptools", "wheel"}, installed

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    r = subprocess.run(
        [str(client_venv), "-c", CLIENT, str(vla_serve)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )  # cwd: the checkout's vla/ must not be importable
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["importable"] == []
    assert got["policy_type"] == "pi0" and got["horizon"] == 6
    assert got["shape"] == [6, 3] and got["dtype"] == "float32"
    assert "'observation/state'" in got["error"]
