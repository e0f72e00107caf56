import json

import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.data.store import EpisodeStore

pytestmark = pytest.mark.sim


def test_collect_then_eval_expert(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'name = "tiny"\nimage_size = 16\n[[tasks]]\nrobot = "arm5"\ntask = "reach"\nepisodes = 2\nnoise = 0.02\n'
    )
    suite = tmp_path / "s.toml"
    suite.write_text('name = "tiny"\nimage_size = 16\nepisodes = 2\n[[tasks]]\nrobot = "arm7"\ntask = "reach"\n')
    runner = CliRunner()
    r = runner.invoke(app, ["collect", str(recipe), "--out", str(tmp_path / "store")])
    assert r.exit_code == 0, r.output
    assert "2 episodes into" in r.output and EpisodeStore.open(tmp_path / "store").num_episodes == 2
    r = runner.invoke(
        app,
        [
            "eval",
            "expert",
            "--suite",
            str(suite),
            "--json",
            str(tmp_path / "e.json"),
            "--videos",
            str(tmp_path / "v"),
            "--num-videos",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "arm7/reach" in r.output and (tmp_path / "e.png").exists()
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["tasks"][0]["successes"] == 2 and len(list((tmp_path / "v").glob("*.mp4"))) == 1


def test_bad_names_are_one_line_errors(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["eval", "expert", "--suite", "nope"])
    assert r.exit_code == 2 and "valid suites are" in r.output
    r = runner.invoke(app, ["eval", str(tmp_path / "missing"), "--suite", "quickstart"])
    assert r.exit_code == 2 and "POLICY must be 'expert'" in r.output
    r = runner.invoke(app, ["collect", "no-such-recipe", "--out", str(tmp_path / "s")])
    assert r.exit_code == 2 and "recipe not found" in r.output


def test_eval_results_name_the_checkpoint_or_server_not_the_loader(tmp_path):
    """With workers, `vla eval` hands `evaluate` a factory (functools.partial); the results named
    it "partial" instead of the checkpoint, so two eval JSONs could not be told apart."""
    from vla.cli.sim import resolve_policy
    from vla.sim.eval import _policy_name

    ck = tmp_path / "my-ckpt"
    ck.mkdir()
    assert _policy_name(resolve_policy(str(ck), workers=2)) == str(ck)
    assert _policy_name(resolve_policy(str(ck), workers=2, noise_scale=0.0)) == str(ck)
    assert _policy_name(resolve_policy("ws://127.0.0.1:9", workers=2)) == "ws://127.0.0.1:9"
    assert _policy_name("expert") == "expert"
