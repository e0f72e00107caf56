"""Multi-node training as docs/scale.md launches it: torchrun on each node with a c10d rendezvous,
here two single-process "nodes" on one machine (gloo). DDP, FSDP and HSDP (replicated across the
nodes) train the same weights as one process (<= 1e-4, AdamW moments included), and a checkpoint
resumes on another world size (1 -> 2 nodes, 2 nodes -> 1 process) and goes on as the
uninterrupted run. One launch runs every case: its start-up is the slow part."""

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vla.config import load_preset
from vla.spec import SpecError
from vla.train.fsdp import fsdp_mode, hybrid_shape
from vla.train.trainer import train

from train.conftest import write_preset
from train.test_fsdp import _close

TESTS = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
from vla.config import load_preset
from vla.train.trainer import train
preset, stores, root = load_preset(sys.argv[1]), sys.argv[2].split(","), sys.argv[3]
train(preset, stores, root + "/ddp", steps=2, progress=False)
train(preset, stores, root + "/fsdp", steps=2, fsdp=True, progress=False)  # also resumed by 1 process below
train(preset, stores, root + "/hsdp", steps=2, fsdp="hybrid", progress=False)
train(preset, stores, root + "/up", steps=4, fsdp="hybrid", resume=True, progress=False)  # saved by 1 process
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(script: Path, *args: str, timeout: float) -> list[subprocess.CompletedProcess]:
    """`script` under torchrun as 2 nodes of 1 process each, rendezvous c10d on 127.0.0.1 (the
    multi-node recipe of docs/scale.md, both nodes on this machine); on a timeout both process
    groups go."""
    port = _free_port()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        cmd += ["--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        cmd += ["--rdzv-id", "vla-test", "--local-addr", "127.0.0.1", str(script), *args]
        procs.append(
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
            )
        )
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    return done


@pytest.mark.slow
def test_two_nodes_train_as_one_process_and_resume_on_another_world_size(tmp_path, two_stores):
    preset = load_preset(write_preset(tmp_path / "p.toml"))
    one2 = train(preset, two_stores, tmp_path / "one" / "2", steps=2, progress=False)
    one4 = train(preset, two_stores, tmp_path / "one" / "4", steps=4, progress=False)
    shutil.copytree(one2, tmp_path / "two" / "up")  # a checkpoint of 1 process, resumed by 2 nodes
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    runs = two_nodes(script, str(tmp_path / "p.toml"), ",".join(two_stores), str(tmp_path / "two"), timeout=400)
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    for mode in ("ddp", "fsdp", "hsdp"):
        _close(one2, tmp_path / "two" / mode)
    _close(one4, tmp_path / "two" / "up")
    shutil.copytree(tmp_path / "two" / "fsdp", tmp_path / "down")  # a checkpoint of 2 nodes, resumed by 1 process
    down = train(preset, two_stores, tmp_path / "down", steps=4, resume=True, progress=False)
    _close(one4, down)
    diffs = {m: _max_diff(one2, tmp_path / "two" / m) for m in ("ddp", "fsdp", "hsdp")}
    diffs |= {"1->2 nodes": _max_diff(one4, tmp_path / "two" / "up"), "2 nodes->1": _max_diff(one4, down)}
    print("max abs diff of the trained weights, vs one process:", {k: f"{v:.1e}" for k, v in diffs.items()})


def _max_diff(a_dir: Path, b_dir: Path) -> float:
    a = torch.load(a_dir / "train_state.pt", weights_only=False)["model"]
    b = torch.load(b_dir / "train_state.pt", weights_only=False)["model"]
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_hsdp_mesh_is_nodes_by_processes_per_node():
    assert hybrid_shape(2, 1) == (2, 1)  # 2 nodes of 1 process: replicated, shard dimension 1
    assert hybrid_shape(8, 4) == (2, 4)
    assert hybrid_shape(4, 4) == (1, 4)  # one node: plain FSDP
    with pytest.raises(SpecError, match="same number of processes on every node"):
        hybrid_shape(6, 4)
    assert [fsdp_mode(x) for x in (False, None, True, "full", "hybrid")] == [None, None, "full", "full", "hybrid"]
    with pytest.raises(SpecError, match="hybrid"):
        fsdp_mode("zero3")
