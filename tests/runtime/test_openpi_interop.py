"""The public openpi-client (0.1.2) against our server, run from its own venv (see .ci/openpi_client_check.sh).

Skipped unless VLA_OPENPI_PYTHON names a python with openpi_client installed.
"""

import json
import os
import subprocess

import pytest

from vla.runtime.server import PolicyServer, ServerConfig

_PY = os.environ.get("VLA_OPENPI_PYTHON", "")
pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        not (_PY and os.path.exists(_PY)),
        reason="openpi-client venv not available (VLA_OPENPI_PYTHON unset); run `bash .ci/openpi_client_check.sh`, "
        "which builds it with openpi-client==0.1.2, numpy<2 and typing_extensions",
    ),
]

CLIENT = r"""
import json, sys
import numpy as np
from openpi_client import websocket_client_policy as wcp
from openpi_client.action_chunk_broker import ActionChunkBroker

port, key = int(sys.argv[1]), sys.argv[2]
p = wcp.WebsocketClientPolicy(host="127.0.0.1", port=port, api_key=key)
meta = p.get_server_metadata()
obs = {"observation/state": np.zeros(4, np.float32), "prompt": "reach the red target", "embodiment": "armA",
       "observation/images/front": np.zeros((16, 16, 3), np.uint8),
       "observation/images/wrist": np.zeros((16, 16, 3), np.uint8)}
out = p.infer(obs)
out2 = p.infer(obs)
broker = ActionChunkBroker(p, action_horizon=3)
steps = [broker.infer(obs)["actions"].shape for _ in range(4)]
try:
    p.infer({**obs, "observation/state": np.zeros(9, np.float32)})
    err = ""
except RuntimeError as e:
    err = str(e)
print(json.dumps({"policy_type": meta["policy_type"], "horizon": meta["action_horizon"],
                  "shape": list(out["actions"].shape), "dtype": str(out["actions"].dtype),
                  "server_timing": sorted(out["server_timing"]), "server_timing_2": sorted(out2["server_timing"]),
                  "infer_ms": float(out["server_timing"]["infer_ms"]), "broker": [list(s) for s in steps], "error": err}))
"""


def test_openpi_client_drives_our_server(tiny_ckpt):
    from vla.runtime.policy import load_policy

    srv = PolicyServer(load_policy(tiny_ckpt), ServerConfig(port=0, api_key="k3y")).start()
    try:
        r = subprocess.run([_PY, "-c", CLIENT, str(srv.port), "k3y"], capture_output=True, text=True, timeout=120)
    finally:
        srv.stop()
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["policy_type"] == "pi0" and got["horizon"] == 6
    assert got["shape"] == [6, 3] and got["dtype"] == "float32"
    # The first reply times its own inference; later ones also the previous round trip (as openpi).
    assert got["server_timing"] == ["infer_ms"] and got["infer_ms"] > 0
    assert got["server_timing_2"] == ["infer_ms", "prev_total_ms"]
    assert got["broker"] == [[3], [3], [3], [3]]
    assert "'observation/state'" in got["error"]
