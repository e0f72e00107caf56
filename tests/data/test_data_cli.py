"""`vla data` editing commands and codecs on the command line."""

import json

from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore

from helpers import fill, tiny_embodiment

runner = CliRunner()


def test_edit_commands_and_codec_in_info(tmp_path):
    emb = tiny_embodiment(cams=(("front", 8, 10), ("wrist", 64, 64)))
    fill(EpisodeStore.create(tmp_path / "s", [emb], codecs={"wrist": "jpeg:80"}), emb, 5, 4)
    r = runner.invoke(app, ["data", "info", str(tmp_path / "s"), "--no-sheet"])
    assert r.exit_code == 0, r.output
    assert "codec lossless" in r.output and "codec jpeg:80" in r.output
    r = runner.invoke(
        app,
        [
            "data",
            "keep",
            str(tmp_path / "s"),
            str(tmp_path / "k"),
            "--success",
            "yes",
            "--task",
            "do 0",
            "--task",
            "do 2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert [i.index for i in EpisodeStore.open(tmp_path / "k").infos()] == [0, 1]  # source episodes 0 and 2
    r = runner.invoke(app, ["data", "delete", str(tmp_path / "s"), str(tmp_path / "d"), "--episodes", "0-1,4"])
    assert r.exit_code == 0 and EpisodeStore.open(tmp_path / "d").num_episodes == 2
    r = runner.invoke(app, ["data", "merge", str(tmp_path / "m"), str(tmp_path / "k"), str(tmp_path / "d")])
    assert r.exit_code == 0 and EpisodeStore.open(tmp_path / "m").num_episodes == 4
    r = runner.invoke(
        app,
        ["data", "split", str(tmp_path / "m"), str(tmp_path / "tr"), str(tmp_path / "va"), "--val-fraction", "0.25"],
    )
    assert r.exit_code == 0 and EpisodeStore.open(tmp_path / "va").num_episodes == 1
    r = runner.invoke(app, ["data", "migrate", str(tmp_path / "s"), str(tmp_path / "j"), "--codec", "jpeg:90"])
    assert r.exit_code == 0, r.output
    info = json.loads(runner.invoke(app, ["data", "info", str(tmp_path / "j"), "--json", "--no-sheet"]).output)
    assert info["embodiments"]["tiny"]["codecs"] == {"front": "jpeg:90", "wrist": "jpeg:90"}


def test_bad_input_is_one_line(tmp_path):
    emb = tiny_embodiment()
    fill(EpisodeStore.create(tmp_path / "s", [emb]), emb, 2, 3)
    r = runner.invoke(app, ["data", "migrate", str(tmp_path / "s"), str(tmp_path / "x"), "--codec", "webp"])
    assert r.exit_code == 2 and "unknown image codec 'webp'; codecs: lossless, jpeg" in r.output
    r = runner.invoke(app, ["data", "keep", str(tmp_path / "s"), str(tmp_path / "x"), "--episodes", "7"])
    assert r.exit_code == 2 and "out of range" in r.output
    r = runner.invoke(app, ["data", "keep", str(tmp_path / "s"), str(tmp_path / "x"), "--success", "maybe"])
    assert r.exit_code == 2 and "success must be one of yes, no, unknown" in r.output
    assert not (tmp_path / "x").exists()
