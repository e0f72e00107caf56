import json

from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore
from vla.data.synthetic import write_synthetic
from vla.resources import load_embodiment

from helpers import FIXTURES

runner = CliRunner()


def test_help_lists_working_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("data", "bench", "quickstart"):
        assert cmd in r.output
    r = runner.invoke(app, ["data", "--help"])
    for cmd in ("info", "stats", "import-lerobot", "export-lerobot"):
        assert cmd in r.output


def test_help_shows_every_default_and_the_short_flags():
    """Rich markup used to eat every "[default: ...]" written in a help text."""
    r = runner.invoke(app, ["train", "-h"])
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    assert "Training steps [default: the preset's]" in text and "Global batch size [default: the preset's]" in text
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.startswith("vla ")
    r = runner.invoke(app, ["-h"])
    assert r.exit_code == 0 and "--version" in r.output


def test_data_commands_end_to_end(tmp_path):
    r = runner.invoke(app, ["data", "import-lerobot", str(FIXTURES / "lerobot" / "aloha_image"), str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "imported 2 episodes, 32 frames" in r.output
    r = runner.invoke(app, ["data", "info", str(tmp_path / "s"), "--json", "--sheet", str(tmp_path / "sheet.png")])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["episodes"] == 2 and info["frames"] == 32
    assert info["embodiments"]["aloha"]["keys"]["observation/images/top"]["shape"] == [48, 64, 3]
    assert info["norm_stats"]["aloha"]["action"]["count"] == 32
    assert (tmp_path / "sheet.png").stat().st_size > 1000
    r = runner.invoke(app, ["data", "info", str(tmp_path / "s"), "--no-sheet"])
    assert r.exit_code == 0 and "transfer the cube" in r.output and "norm stats [aloha]" in r.output
    r = runner.invoke(app, ["data", "stats", str(tmp_path / "s"), "--out", str(tmp_path / "ns.json")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ns.json").read_text())["aloha"]["observation/state"]["count"] == 32
    r = runner.invoke(app, ["data", "export-lerobot", str(tmp_path / "s"), str(tmp_path / "lr"), "--images", "image"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "lr" / "meta" / "info.json").read_text())["total_frames"] == 32


def test_bad_input_gives_one_line_errors(tmp_path):
    r = runner.invoke(app, ["data", "info", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "not an episode store" in r.output
    r = runner.invoke(app, ["data", "import-lerobot", str(tmp_path), str(tmp_path / "x")])
    assert r.exit_code == 2 and "missing" in r.output and "info.json" in r.output
    emb = load_embodiment("toy2d")
    s = EpisodeStore.create(tmp_path / "s", [emb])
    write_synthetic(s, emb, 1, 3)
    r = runner.invoke(app, ["data", "export-lerobot", str(tmp_path / "s"), str(tmp_path / "o"), "--images", "gif"])
    assert r.exit_code == 2 and "--images must be" in r.output


def test_train_tokenizer_and_bench_commands(tmp_path):
    import sys

    sys.path.insert(0, str(FIXTURES.parent))
    from train.conftest import write_preset

    emb = load_embodiment("toy2d")
    s = EpisodeStore.create(tmp_path / "s", [emb])
    write_synthetic(s, emb, 3, 20)
    preset = write_preset(tmp_path / "p.toml")
    r = runner.invoke(
        app, ["train", str(preset), "--data", str(tmp_path / "s"), "--out", str(tmp_path / "ck"), "--steps", "2"]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ck" / "model.safetensors").exists() and "checkpoint:" in r.output
    r = runner.invoke(app, ["train", "nope", "--data", str(tmp_path / "s"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "unknown policy preset 'nope'" in r.output
    r = runner.invoke(
        app,
        [
            "tokenizer",
            "fit",
            str(tmp_path / "s"),
            "--out",
            str(tmp_path / "tok"),
            "--horizon",
            "10",
            "--vocab",
            "256",
            "--chunks",
            "40",
        ],
    )
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)["toy2d"]["heldout"]
    assert rep["tokens_per_chunk_mean"] > 0 and rep["compression"] > 1 and rep["roundtrip_failures"] == 0
    assert (tmp_path / "tok" / "toy2d" / "fast.json").exists()
    # A benchmark command, run for real on the checkpoint just trained (the cheapest one: no simulation).
    r = runner.invoke(
        app,
        [
            "bench",
            "probe",
            str(tmp_path / "ck"),
            "--data",
            str(tmp_path / "s"),
            "--windows",
            "8",
            "--json",
            str(tmp_path / "probe.json"),
        ],
    )
    assert r.exit_code == 0, r.output
    probe = json.loads(r.output)
    assert probe == json.loads((tmp_path / "probe.json").read_text())
    assert probe["windows"] == 8 and set(probe["loss"]) == {"as_recorded", "other_images", "other_instruction"}
    assert all(v > 0 for v in probe["loss"].values())
    assert probe["goal"]["per_embodiment"]["toy2d"]["episodes"] == 3
    r = runner.invoke(app, ["bench", "probe", str(tmp_path / "nope"), "--data", str(tmp_path / "s")])
    assert r.exit_code == 2 and "not a checkpoint" in r.output
