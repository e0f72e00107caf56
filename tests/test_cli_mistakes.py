"""Every command, walked with the mistakes a user makes: each ends with exit code != 0, one
`error:` line that names the fix, no traceback, and nothing created or changed on disk."""

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore
from vla.data.synthetic import write_synthetic

from helpers import FIXTURES, tiny_embodiment

sys.path.insert(0, str(FIXTURES.parent))
from train.conftest import write_preset  # noqa: E402

# (name, argv with {placeholders}, a fragment the one error line must contain)
MISTAKES = [
    ("train into a store", "train {preset} --data {store} --steps 1 --out {store}", "an episode store"),
    ("train into a file", "train {preset} --data {store} --steps 1 --out {file}", "a file of"),
    ("train into a folder", "train {preset} --data {store} --steps 1 --out {folder}", "a folder with"),
    ("train over a checkpoint", "train {preset} --data {store} --steps 1 --out {ckpt}", "--overwrite"),
    ("overwrite a store", "train {preset} --data {store} --steps 1 --out {store} --overwrite", "never replaces"),
    ("zero steps", "train {preset} --data {store} --steps 0 --out {new}", "--steps must be >= 1"),
    ("zero minutes", "train {preset} --data {store} --minutes 0 --out {new}", "--minutes must be > 0"),
    ("missing store", "train {preset} --data {new} --steps 1 --out {new2}", "not an episode store"),
    ("a file as store", "train {preset} --data {file} --steps 1 --out {new}", "not an episode store"),
    ("unknown preset", "train pi0-nonexistent --data {store} --steps 1 --out {new}", "pi0-nonexistent"),
    ("hsdp without torchrun", "train {preset} --data {store} --steps 1 --out {new} --hsdp", "torchrun"),
    ("resume nothing", "train {preset} --data {store} --steps 1 --out {new} --resume", "not a vla checkpoint"),
    ("resume a store", "train {preset} --data {store} --steps 1 --out {store} --resume", "not a vla checkpoint"),
    ("init from a store", "train {preset} --data {store} --steps 1 --out {new} --init {store}", "checkpoint"),
    ("bad mixture", "train {preset} --data {store} --weights 1,2 --steps 1 --out {new}", "mixture weights"),
    ("negative RTC delay", "train {preset} --data {store} --rtc-max-delay -1 --steps 1 --out {new}", "--rtc-max-delay"),
    (
        "RTC delay past the horizon",
        "train {preset} --data {store} --rtc-max-delay 6 --steps 1 --out {new}",
        "0..horizon",
    ),
    ("collect into a file", "collect quickstart --out {file} --episodes 1", "a file of"),
    ("collect into a folder", "collect quickstart --out {folder} --episodes 1", "a folder with"),
    ("collect into a checkpoint", "collect quickstart --out {ckpt} --episodes 1", "a vla checkpoint"),
    ("collect unknown recipe", "collect no-such-recipe --out {new}", "no-such-recipe"),
    ("collect zero episodes", "collect quickstart --out {new} --episodes 0", "episodes must be >= 1"),
    ("collect to a URL", "collect quickstart --out s3://bucket/demos --episodes 1", "vla data migrate"),
    (
        "record to a URL",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --out s3://b/x",
        "takes a local store",
    ),
    ("probe a URL store", "bench probe {ckpt} --data s3://bucket/demos", "takes a local store"),
    ("collect negative seed", "collect quickstart --out {new} --episodes 1 --seed -3", "seed must be >= 0"),
    ("eval unknown suite", "eval {ckpt} --suite no-such-suite", "no-such-suite"),
    ("eval robots it lacks", "eval {ckpt} --suite quickstart --episodes 1", "not trained on"),
    ("eval robots it lacks, workers", "eval {ckpt} --suite quickstart --episodes 1 --workers 2", "not trained on"),
    ("eval a missing policy", "eval {new} --suite quickstart", "none of these"),
    ("eval zero episodes", "eval expert --suite quickstart --episodes 0", "episodes must be >= 1"),
    ("eval json into a folder", "eval expert --suite quickstart --json {folder}", "is a folder"),
    ("eval json over a file", "eval expert --suite quickstart --json {file}", "not a .json file"),
    ("serve a missing checkpoint", "serve {new}", "not a checkpoint"),
    ("serve on a taken port", "serve {ckpt} --port {busy_port}", "pick another --port"),
    ("convert a missing source", "convert {new} {new2}", "{new}"),
    ("convert into a file", "convert {ckpt} {file}", "exists"),
    ("export a missing checkpoint", "export-weights {new} {new2}", "not a checkpoint"),
    ("export into a store", "export-weights {ckpt} {store}", "exists"),
    ("info of nothing", "data info {new}", "not an episode store"),
    ("info of a file", "data info {file}", "not an episode store"),
    ("info sheet over a file", "data info {store} --sheet {file}", "not a .png file"),
    ("stats over a folder", "data stats {store} --out {folder}", "is a folder"),
    ("verify nothing", "data verify {new}", "not an episode store"),
    ("import a store", "data import-lerobot {store} {new}", "info.json"),
    ("import into a store", "data import-lerobot {lerobot} {store}", "already exists"),
    ("export into a folder", "data export-lerobot {store} {folder}", "already exists"),
    ("keep into itself", "data keep {store} {store} --episodes 0", "already exists"),
    ("keep bad indices", "data keep {store} {new} --episodes abc", "abc"),
    ("keep bad outcome", "data keep {store} {new} --success maybe", "maybe"),
    ("merge into a file", "data merge {file} {store} {store}", "already exists"),
    ("split into a file", "data split {store} {file} {new}", "already exists"),
    ("migrate into a folder", "data migrate {store} {folder}", "already exists"),
    ("migrate bad codec", "data migrate {store} {new} --codec gif", "gif"),
    ("run a missing launch", "run no-such-launch", "no-such-launch"),
    ("run with both policies", "run arm7-reach-sim --checkpoint {ckpt} --url ws://127.0.0.1:1", "not both"),
    ("run into a file", "run arm7-reach-sim --checkpoint {ckpt} --out {file}", "a file of"),
    ("sim-robot unknown env", "sim-robot --env vla/Nope-Nope-v0 --port 0 --seconds 1", "Nope"),
    ("bench learn zero minutes", "bench learn --minutes 0 --out {new}", "--minutes must be positive"),
    ("bench learn into a store", "bench learn --minutes 1 --out {store}", "an episode store"),
    ("bench json into a folder", "bench sim --quick --json {folder}", "is a folder"),
    ("tokenizer into a file", "tokenizer fit {store} --out {file}", "a file of"),
    ("quickstart into a store", "quickstart --out {store}", "an episode store"),
    ("quickstart --force on a folder", "quickstart --out {folder} --force", "a folder with"),
    ("quickstart zero minutes", "quickstart --train-minutes 0 --out {new}", "--train-minutes must be > 0"),
    ("quickstart zero episodes", "quickstart --episodes 0 --out {new}", "--episodes must be >= 1"),
    ("train bad weights", "train {preset} --data {store} --weights a --out {new}", "--weights must be numbers"),
    ("train on a missing GPU", "train {preset} --data {store} --device cuda:7 --steps 1 --out {new}", "--device"),
    (
        "train on a typo device",
        "train {preset} --data {store} --device gpu --steps 1 --out {new}",
        "not a torch device",
    ),
    ("train a preset typo", "train {badpreset} --data {store} --steps 1 --out {new}", "unknown [train] keys"),
    ("train bad freeze", "train {preset} --data {store} --freeze foo --steps 1 --out {new}", "foo"),
    ("train a corrupt init", "train {preset} --data {store} --init {badck} --steps 1 --out {new}", "corrupt JSON"),
    ("serve a corrupt checkpoint", "serve {badsha}", "corrupted"),
    ("serve a config that contradicts the weights", "serve {wide}", "policy.config.backbone.text.mlp = 128"),
    ("eval a config that contradicts", "eval {wide} --suite quickstart", "written with 64"),
    ("serve a bad port", "serve {ckpt} --port 99999", "99999"),
    ("eval negative videos", "eval expert --suite quickstart --num-videos -1 --videos {new}", "--num-videos"),
    ("eval replan 0", "eval {ckpt} --suite quickstart --replan-every 0", "replan_every must be >= 1"),
    ("run a negative duration", "run arm7-reach-sim --checkpoint {ckpt} --duration -5 --out {new}", "duration"),
    ("run an unknown mode", "run arm7-reach-sim --checkpoint {ckpt} --mode foo --out {new}", "foo"),
    ("split a bad fraction", "data split {store} {new} {new2} --val-fraction 1.5", "1.5"),
    ("keep past the end", "data keep {store} {new} --episodes 100", "100"),
    ("sheet inside a file", "data info {store} --sheet {file}/y.png", "is a file, not a folder"),
    ("bench learn unknown preset", "bench learn --presets nope --minutes 1 --out {new}", "unknown policy preset"),
    ("bench infer zero reps", "bench infer --reps 0", "--reps and --threads must be >= 1"),
    ("bench data --store a local store", "bench data --store {store}", "give the URL of a store on object storage"),
    ("bench data zero batches", "bench data --store s3://bucket/store --batches 0", "--batches must be at least 1"),
    ("bench peers unknown suite", "bench peers --suite builtin --out {new}", "--suite must be one of"),
    ("bench peers unknown policy", "bench peers --policies vla,smolvla --out {new}", "smolvla"),
    ("bench peers zero minutes", "bench peers --minutes 0 --out {new}", "--minutes must be > 0"),
    ("bench peers on the demos' seeds", "bench peers --seed 0 --policies vla --out {new}", "held-out seeds"),
    ("bench peers a file as demos", "bench peers --demos {file} --policies vla --out {new}", "not an episode store"),
    ("bench peers demos of another robot", "bench peers --demos {store} --policies vla --out {new}", "'aloha'"),
    ("bench peers a missing peer python", "bench peers --peer-python {new} --out {new2}", "no such file"),
    ("bench peers into a store", "bench peers --policies vla --out {store}", "an episode store"),
    ("probe a missing checkpoint", "bench probe {new} --data {store}", "not a checkpoint"),
    ("sim-robot on a taken port", "sim-robot --port {busy_port} --seconds 1", "pick another --port"),
    ("bench sim zero episodes", "bench sim --quick --collect-episodes 0", "--collect-episodes must be >= 1"),
    ("info of a LeRobot dataset", "data info {lerobot}", "vla data import-lerobot"),
    ("train on a LeRobot dataset", "train {preset} --data {lerobot} --steps 1 --out {new}", "vla data import-lerobot"),
    ("convert a vla checkpoint", "convert {ckpt} {new}", "already a vla checkpoint"),
    ("eval an unreachable server", "eval ws://127.0.0.1:1 --suite quickstart --episodes 1", "cannot reach"),
    ("eval videos into a file", "eval expert --suite quickstart --episodes 1 --videos {file}", "a file of"),
    ("collect on a bad ray address", "collect quickstart --out {new} --episodes 1 --ray nowhere", "--ray takes"),
    ("eval on a bad ray address", "eval expert --suite quickstart --episodes 1 --ray head:port", "--ray takes"),
    ("collect on no ray cluster", "collect quickstart --out {new} --episodes 1 --ray 127.0.0.1:1", "cannot reach"),
    ("eval on no ray cluster", "eval expert --suite quickstart --episodes 1 --ray 127.0.0.1:1", "cannot reach"),
    ("merge differing specs", "data merge {new} {store} {lerobot_store}", "differs"),
    ("bench load into a file", "bench load --size tiny --out {file}", "a file of"),
    ("bench load into a store", "bench load --size tiny --out {store}", "an episode store"),
    ("calibrate an unknown robot", "calibrate --robot so102 --port {new}", "so102"),
    ("calibrate a bad role", "calibrate --robot so101 --role boss --port {new}", "boss"),
    (
        "calibrate a missing port",
        "calibrate --robot so101 --port {new} --out {new2}.json --yes --range-seconds 1",
        "no serial port",
    ),
    ("calibrate into a text file", "calibrate --robot so101 --port {new} --out {file}", "ends in .json"),
    ("calibrate over a calibration", "calibrate --robot so101 --port {new} --out {cal}", "--overwrite"),
    (
        "calibrate over other JSON",
        "calibrate --robot so101 --port {new} --out {badck}/config.json",
        "not a calibration file",
    ),
    (
        "calibrate zero seconds",
        "calibrate --robot so101 --port {new} --yes --range-seconds 0",
        "--range-seconds must be > 0",
    ),
    ("calibrate scripted, no duration", "calibrate --robot so101 --port {new} --yes", "--range-seconds"),
    ("virtual-bus over a file", "virtual-bus --robot so101 --link {file}", "never replaces"),
    ("virtual-bus in a missing folder", "virtual-bus --robot so101 --link {new}/port", "does not exist"),
    ("virtual-bus unknown robot", "virtual-bus --robot so102 --link {new}", "so102"),
    ("virtual-bus unknown role", "virtual-bus --robot koch --role boss --link {new}", "boss"),
    ("virtual-bus unknown camera", "virtual-bus --robot so101 --cameras top --link {new}", "no camera 'top'"),
    ("virtual-bus bad camera size", "virtual-bus --robot so101 --camera-size 480 --link {new}", "HxW"),
    ("virtual-bus negative noise", "virtual-bus --robot so101 --noise -1 --link {new}", "must be >= 0"),
    ("calibrate --id and --out", "calibrate --robot so101 --port {new} --id a --out {new2}.json", "not both"),
    (
        "calibrate missing answers",
        "calibrate --robot koch --port {new} --answers {new2} --range-seconds 1",
        "--answers",
    ),
    (
        "record into a file",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --out {file}",
        "a file of",
    ),
    (
        "record into another robot's store",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --out {store}",
        "appends only to a store of 'so101'",
    ),
    (
        "record zero episodes",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --episodes 0 --out {new}",
        "--episodes must be >= 1",
    ),
    (
        "record a bad camera size",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --camera-size 64 --out {new}",
        "--camera-size",
    ),
    (
        "record an unknown robot",
        "record --robot so102 --leader-port {new} --follower-port {new2} --task t --out {new}",
        "so102",
    ),
    (
        "record with a bad calibration",
        "record --robot so101 --leader-port {new} --follower-port {new2} --task t --leader-calibration {file} --out {new}",
        "not a calibration file",
    ),
    ("bench robot zero seconds", "bench robot --seconds 0", "--seconds must be > 0"),
    ("bench robot one real port", "bench robot --leader-port {new}", "give both --leader-port and --follower-port"),
    ("eval the expert with a mode", "eval expert --suite track --mode rtc-guided", "scripted expert"),
    ("eval a delay without a mode", "eval {ckpt} --suite track --delay-ms 300", "needs a chunking --mode"),
    ("eval a negative delay", "eval {ckpt} --suite track --mode sync --delay-ms -5", "--delay-ms must be >= 0"),
    ("eval an unknown mode", "eval {ckpt} --suite track --mode fast", "fast"),
    ("bench rtc zero minutes", "bench rtc --minutes 0 --out {new}", "--minutes must be > 0"),
    ("bench rtc bad delays", "bench rtc --delays-ms 0,soon --out {new}", "--delays-ms must be"),
    ("bench rtc unknown mode", "bench rtc --modes sync,fast --out {new}", "fast"),
    ("bench rtc zero episodes", "bench rtc --episodes 0 --out {new}", "episodes must be in"),
    ("bench rtc unknown preset", "bench rtc --preset nope --out {new}", "nope"),
    ("bench rtc into a store", "bench rtc --minutes 1 --out {store}", "an episode store"),
    ("bench rtc json into a folder", "bench rtc --json {folder}", "is a folder"),
]


def _tree(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_file():
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
        else:
            out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16),))
    store = EpisodeStore.create(root / "demos", [emb])
    write_synthetic(store, emb, episodes=3, length=12, seed=0)
    preset = write_preset(root / "p.toml")
    r = CliRunner().invoke(
        app, ["train", str(preset), "--data", str(root / "demos"), "--steps", "1", "--out", str(root / "ckpt")]
    )
    assert r.exit_code == 0, r.output
    (root / "notes.txt").write_text("my notes\n")
    (root / "results").mkdir()
    (root / "results" / "table.csv").write_text("a,b\n1,2\n")
    import shutil

    shutil.copytree(FIXTURES / "lerobot" / "aloha_image", root / "lerobot")
    shutil.copytree(root / "ckpt", root / "bad-ckpt")
    (root / "bad-ckpt" / "config.json").write_text("{not json")
    shutil.copytree(root / "ckpt", root / "bad-sha")
    weights = bytearray((root / "bad-sha" / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF
    (root / "bad-sha" / "model.safetensors").write_bytes(bytes(weights))
    other = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16),), hz=30.0)  # same name, another rate
    write_synthetic(EpisodeStore.create(root / "armA-other", [other]), other, episodes=1, length=5, seed=1)
    shutil.copytree(root / "ckpt", root / "wide-ckpt")  # config.json edited by hand: the MLP doubled
    cfg = json.loads((root / "wide-ckpt" / "config.json").read_text())
    cfg["policy"]["config"]["backbone"]["text"]["mlp"] = 128
    (root / "wide-ckpt" / "config.json").write_text(json.dumps(cfg))
    (root / "bad-preset.toml").write_text(preset.read_text() + "bogus_key = 3\n")  # lands in [train]
    shutil.copy(FIXTURES / "lerobot_calibration" / "so101_follower.json", root / "arm.json")  # a calibration
    return root


@pytest.mark.parametrize("name, argv, expect", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_gets_one_line_and_changes_nothing(sandbox, name, argv, expect, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    names = {
        "preset": sandbox / "p.toml",
        "store": sandbox / "demos",
        "ckpt": sandbox / "ckpt",
        "file": sandbox / "notes.txt",
        "folder": sandbox / "results",
        "lerobot": sandbox / "lerobot",
        "new": sandbox / "new-out",
        "new2": sandbox / "new-out-2",
        "badck": sandbox / "bad-ckpt",
        "badsha": sandbox / "bad-sha",
        "badpreset": sandbox / "bad-preset.toml",
        "wide": sandbox / "wide-ckpt",
        "lerobot_store": sandbox / "armA-other",
        "cal": sandbox / "arm.json",
        "busy_port": busy.getsockname()[1],
    }
    monkeypatch.chdir(sandbox)
    before = _tree(sandbox)
    args = [a.format(**names) for a in argv.split()]
    try:
        r = CliRunner().invoke(app, args)
    finally:
        busy.close()
    text = r.output
    assert r.exit_code not in (0, None), f"{name}: exit 0\n{text}"
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{name}: raised {r.exception!r}\n{text}"
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"{name}: expected one error line\n{text}"
    assert expect.format(**names) in errors[0], f"{name}: {errors[0]!r} lacks {expect!r}"
    assert _tree(sandbox) == before, f"{name}: the user's files changed"
    assert sorted(os.listdir(sandbox)) == sorted(before_top(before))


def before_top(tree: dict) -> list[str]:
    return [k for k in tree if "/" not in k]
