"""FSDP2 over 2 gloo processes on the CPU trains the same weights as one process (full fine-tune
with an exact resume in the middle, and LoRA with gradient checkpointing), and its full-state
checkpoint loads and serves in one process. Every preset in policies/ (at the contract test's CPU
size) trains under FSDP as in one process."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_contract import PRESETS, cpu_sized

from vla.config import load_preset
from vla.runtime.policy import load_policy
from vla.train.trainer import train

from train.conftest import write_preset

TESTS = Path(__file__).resolve().parents[1]


def _torchrun(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run `script` under torchrun on 2 CPU processes (gloo); on a timeout the whole process group goes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        [*cmd, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


SCRIPT = """
import sys
from vla.config import load_preset
from vla.train.trainer import train
preset, stores, root = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
train(load_preset(preset), stores, root + "/full", steps=2, fsdp=True, progress=False)
train(load_preset(preset), stores, root + "/full", steps=4, fsdp=True, resume=True, progress=False)
train(load_preset(preset, {"train": {"grad_checkpoint": True}}), stores, root + "/lora", steps=3, fsdp=True,
      lora_rank=2, progress=False)
"""


def _close(a_dir, b_dir, atol=1e-4):
    for name in ("model.safetensors",):
        a, b = load_file(str(a_dir / name)), load_file(str(b_dir / name))
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst <= atol, (name, worst)
    a = torch.load(a_dir / "train_state.pt", weights_only=False)
    b = torch.load(b_dir / "train_state.pt", weights_only=False)
    assert a["model"].keys() == b["model"].keys() and a["step"] == b["step"]
    worst = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
    assert worst <= atol, ("train_state", worst)
    # The same parameters were stepped, with the same moments. (A resume under FSDP loads the optimizer
    # through torch.distributed.checkpoint, which also gives never-stepped parameters zero states.)
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert set(sa) <= set(sb)
    for k in sa:
        torch.testing.assert_close(sa[k]["exp_avg"], sb[k]["exp_avg"], atol=atol, rtol=0)


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_one(tmp_path, two_stores):
    preset = write_preset(tmp_path / "p.toml")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    r = _torchrun(script, str(preset), ",".join(two_stores), str(tmp_path / "two"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    one_full = train(load_preset(preset), two_stores, tmp_path / "one" / "full", steps=4, progress=False)
    one_lora = train(
        load_preset(preset, {"train": {"grad_checkpoint": True}}),
        two_stores,
        tmp_path / "one" / "lora",
        steps=3,
        lora_rank=2,
        progress=False,
    )
    _close(one_full, tmp_path / "two" / "full")
    _close(one_lora, tmp_path / "two" / "lora")
    assert (tmp_path / "two" / "lora" / "adapter_model.safetensors").exists()
    # Full-state checkpoints: one process loads and serves them.
    obs = {
        "observation/state": np.zeros(4, np.float32),
        "task": "reach the red target",
        "embodiment": "armA",
        "observation/images/front": np.zeros((16, 16, 3), np.uint8),
        "observation/images/wrist": np.zeros((16, 16, 3), np.uint8),
    }
    for d in ("full", "lora"):
        assert np.isfinite(load_policy(tmp_path / "two" / d).infer(obs)["actions"]).all()


PRESETS_SCRIPT = """
import os, sys, traceback
from pathlib import Path
from test_contract import cpu_sized
from vla.train.trainer import train
names, stores, root = sys.argv[1].split(","), sys.argv[2].split(","), Path(sys.argv[3])
for name in names:
    try:
        train(cpu_sized(name), stores, root / name, fsdp=True, progress=False)
    except Exception:  # every rank fails alike (say, a model fully_shard refuses): noted, the next preset runs
        (root / f"{name}.rank{os.environ['RANK']}.err").write_text(traceback.format_exc())
"""


@pytest.fixture(scope="module")
def fsdp_presets(tmp_path_factory, two_stores):
    """Every preset at the contract test's CPU size (2 steps, batch 2) trained by FSDP over 2 gloo
    processes, in one torchrun (its start-up is paid once) -> (the run's folder, the run)."""
    root = tmp_path_factory.mktemp("fsdp_presets")
    script = root / "run.py"
    script.write_text(PRESETS_SCRIPT)
    return root, _torchrun(script, ",".join(PRESETS), ",".join(two_stores), str(root), timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("name", PRESETS)
def test_fsdp_trains_every_preset_as_one_process(name, fsdp_presets, two_stores, tmp_path):
    root, run = fsdp_presets
    errors = sorted(root.glob(f"{name}.rank*.err"))
    assert not errors, f"{name} under FSDP:\n{errors[0].read_text()[-3000:]}"
    assert (root / name / "model.safetensors").exists(), f"torchrun exit {run.returncode}:\n{run.stderr[-3000:]}"
    one = train(cpu_sized(name), two_stores, tmp_path / "one", progress=False)
    _close(one, root / name)


def _edit_log_temperature(ck: Path, value: float, shape: tuple) -> None:
    """Set every saved copy of the keypoint stem's log_temperature (served weights, raw weights, EMA,
    AdamW moments) to `value` in `shape`, as a checkpoint written by another version would hold it."""
    import hashlib
    import json

    from safetensors.torch import save_file

    def edit(d: dict) -> None:
        for k in [k for k in d if k.endswith("log_temperature")]:
            d[k] = torch.full(shape, value) if torch.is_tensor(d[k]) else d[k]

    weights = load_file(str(ck / "model.safetensors"))
    edit(weights)
    save_file(weights, str(ck / "model.safetensors"))
    state = torch.load(ck / "train_state.pt", weights_only=False)
    edit(state["model"])
    edit(state["ema"])
    for k, moments in state["optimizer"]["state"].items():
        if k.endswith("log_temperature"):
            moments.update(exp_avg=torch.full(shape, 0.01), exp_avg_sq=torch.full(shape, 1e-4))
    torch.save(state, ck / "train_state.pt")
    config = json.loads((ck / "config.json").read_text())
    config["files"]["model.safetensors"] = hashlib.sha256((ck / "model.safetensors").read_bytes()).hexdigest()
    (ck / "config.json").write_text(json.dumps(config))


def test_checkpoints_with_a_scalar_log_temperature_load_and_resume(tmp_path, two_stores):
    """The keypoint stem's log_temperature was 0-dim before FSDP support (fully_shard refuses scalars);
    checkpoints written then still serve, initialize and resume, as their [1] counterparts do."""
    import shutil

    from vla.model.interop.checkpoint import Checkpoint, build_from_checkpoint
    from vla.train.init import load_init_weights

    preset = cpu_sized("pi0-tiny")
    ck = train(preset, two_stores, tmp_path / "new", steps=1, progress=False)
    shutil.copytree(ck, tmp_path / "old")
    _edit_log_temperature(tmp_path / "new", 0.5, (1,))
    _edit_log_temperature(tmp_path / "old", 0.5, ())
    assert load_file(str(tmp_path / "old" / "model.safetensors"))["grounding.keypoints.log_temperature"].ndim == 0

    new, _, _ = build_from_checkpoint(Checkpoint(tmp_path / "new"))
    old, _, _ = build_from_checkpoint(Checkpoint(tmp_path / "old"))
    assert old.grounding.keypoints.log_temperature.shape == (1,)
    assert old.grounding.keypoints.log_temperature.item() == 0.5
    for k, v in new.state_dict().items():
        assert torch.equal(old.state_dict()[k], v), k
    load_init_weights(new, Checkpoint(tmp_path / "old"))  # --init from an old checkpoint
    # A resume restores the raw weights, the EMA and the AdamW moments of the old shape.
    for d in ("new", "old"):
        train(preset, two_stores, tmp_path / d, steps=2, resume=True, progress=False)
    _close(tmp_path / "new", tmp_path / "old", atol=0.0)
