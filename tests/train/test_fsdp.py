"""FSDP2 over 2 gloo processes on the CPU trains the same weights as one process (full fine-tune
with an exact resume in the middle, and LoRA with gradient checkpointing), and its full-state
checkpoint loads and serves in one process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vla.config import load_preset
from vla.runtime.policy import load_policy
from vla.train.trainer import train

from train.conftest import write_preset

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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29531",
            str(script),
            str(preset),
            ",".join(two_stores),
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
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
