"""`vla train` never harms what a user has, and stops cleanly (issue: nothing a user has is lost)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.config import load_preset
from vla.model.interop.checkpoint import Checkpoint
from vla.spec import SpecError
from vla.train.trainer import train

from train.conftest import write_preset

ROOT = Path(__file__).resolve().parents[2]


def tree(path: Path) -> dict:
    """Every file under path (or the file itself) -> sha256: to see that nothing changed."""
    path = Path(path)
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in path.rglob("*") if p.is_file()
    }


def run(*args):
    r = CliRunner().invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def test_train_refuses_a_store_a_file_and_a_folder_as_out(tmp_path, two_stores):
    p = write_preset(tmp_path / "p.toml")
    data = ",".join(two_stores)
    before = tree(two_stores[0])
    code, out = run("train", p, "--data", data, "--steps", 1, "--out", two_stores[0])
    assert code != 0 and "an episode store" in out and "choose another --out" in out
    assert tree(two_stores[0]) == before
    code, out = run("train", p, "--data", data, "--steps", 1, "--out", two_stores[0], "--overwrite")
    assert code != 0 and "never replaces" in out and tree(two_stores[0]) == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, out = run("train", p, "--data", data, "--steps", 1, "--out", notes)
    assert code != 0 and "a file of 4 bytes" in out and notes.read_text() == "mine"
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "a.csv").write_text("1,2")
    code, out = run("train", p, "--data", data, "--steps", 1, "--out", folder, "--overwrite")
    assert code != 0 and "a folder with 1 entry" in out
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "p.toml", "results"]  # nothing hidden beside them
    assert "Traceback" not in out


def test_train_writes_only_out_with_one_mode_and_replaces_only_on_request(tmp_path, two_stores):
    p = write_preset(tmp_path / "p.toml")
    runs = tmp_path / "runs"
    runs.mkdir()
    args = ("train", p, "--data", ",".join(two_stores), "--steps", 2, "--out", runs / "ck")
    code, out = run(*args)
    assert code == 0, out
    assert os.listdir(runs) == ["ck"]  # no .ck.loss.png, .ck.metrics.jsonl, .ck.adapter beside it
    assert {"metrics.jsonl", "loss.png", "model.safetensors", "config.json"} <= set(os.listdir(runs / "ck"))
    modes = {f.name: f.stat().st_mode & 0o777 for f in (runs / "ck").iterdir() if f.is_file()}
    assert len(set(modes.values())) == 1, modes  # safetensors used to be 0600, the rest 0644
    code, out = run(*args)
    assert code != 0 and "--resume to continue it or --overwrite to replace it" in out
    assert Checkpoint(runs / "ck").config["step"] == 2
    code, out = run(*args[:-4], "--steps", 3, "--out", runs / "ck", "--overwrite")
    assert code == 0, out
    assert Checkpoint(runs / "ck").config["step"] == 3 and os.listdir(runs) == ["ck"]
    code, out = run(*args, "--resume", "--overwrite")
    assert code != 0 and "not both" in out


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--steps", 0, "--steps must be >= 1"),
        ("--steps", -1, "--steps must be >= 1"),
        ("--minutes", 0, "--minutes must be > 0"),
        ("--batch-size", 0, "--batch-size must be >= 1"),
        ("--lr", 0, "--lr must be > 0"),
    ],
)
def test_numbers_mean_what_they_say(tmp_path, two_stores, flag, value, message):
    p = write_preset(tmp_path / "p.toml")
    code, out = run("train", p, "--data", ",".join(two_stores), "--out", tmp_path / "ck", flag, value)
    assert code != 0 and message in out and not (tmp_path / "ck").exists()


def test_library_refuses_zero_steps(tmp_path, two_stores):
    with pytest.raises(SpecError, match="steps must be >= 1"):
        train(load_preset(write_preset(tmp_path / "p.toml")), two_stores, tmp_path / "ck", steps=0, progress=False)


def _corrupt_frame(store_path: Path, emb: str, cam: str, frame: int) -> None:
    import numpy as np

    shard = Path(store_path) / emb / "observation" / "images" / cam / "c.0.0.0.0"
    raw = bytearray(shard.read_bytes())
    off, n = (int(x) for x in np.frombuffer(bytes(raw[16 * frame : 16 * frame + 16]), "<u8"))
    raw[off : off + n] = b"\x07" * n
    shard.write_bytes(bytes(raw))


def test_a_corrupt_frame_is_skipped_counted_and_verify_names_it(tmp_path, two_stores):
    import shutil

    store = tmp_path / "armA"
    shutil.copytree(two_stores[0], store)
    _corrupt_frame(store, "armA", "front", 5)
    p = write_preset(tmp_path / "p.toml")
    ck = train(load_preset(p, {"train": {"batch_size": 16}}), [str(store)], tmp_path / "ck", steps=6, progress=False)
    rows = [json.loads(x) for x in (ck / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1].get("corrupt_windows", 0) >= 1  # at 16 windows a step of 48 over 6 steps, frame 5 is drawn
    code, out = run("data", "verify", store)
    assert code == 1 and "episode 0 [armA] observation/images/front frame 5" in out and "1 corrupt" in out
    code, out = run("data", "verify", two_stores[0])
    assert code == 0 and "0 corrupt" in out
    code, out = run("data", "info", store, "--sheet", tmp_path / "sheet.png")  # metadata of a damaged store
    assert code == 0 and "episodes   4" in out, out


def test_a_broken_store_stops_training_with_one_line(tmp_path, two_stores):
    import shutil

    store = tmp_path / "armA"
    shutil.copytree(two_stores[0], store)
    for t in range(12 * 4):
        _corrupt_frame(store, "armA", "front", t)
    p = write_preset(tmp_path / "p.toml")
    code, out = run("train", p, "--data", store, "--steps", 2, "--out", tmp_path / "ck")
    assert code != 0 and "the store is broken" in out and "vla data verify" in out
    assert not (tmp_path / "ck").exists()


def test_sigterm_writes_a_resumable_checkpoint(tmp_path, two_stores):
    p = write_preset(tmp_path / "p.toml")
    out = tmp_path / "ck"
    cmd = [sys.executable, "-c", "from vla.cli import main; main()", "train", str(p), "--data", ",".join(two_stores)]
    cmd += ["--steps", "100000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = []

    def read():
        for line in iter(lambda: proc.stderr.read(64), ""):
            seen.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 120
    while "step=20" not in "".join(seen) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    text = "".join(seen)
    assert code == 130 and "SIGTERM at step" in text and "--resume" in text and "Traceback" not in text
    step = Checkpoint(out).config["step"]
    assert step >= 20
    assert os.listdir(tmp_path) == ["ck", "p.toml"] or sorted(os.listdir(tmp_path)) == ["ck", "p.toml"]
    code, msg = run("train", p, "--data", ",".join(two_stores), "--steps", step + 2, "--out", out, "--resume")
    assert code == 0, msg
    assert Checkpoint(out).config["step"] == step + 2
