"""Using a store on S3 (moto's server over HTTP): the edit commands from and to s3://, training from
s3:// through the local read cache, and `vla bench data --store s3://...`."""

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore, StoreError
from vla.data.synthetic import write_synthetic
from vla.spec import STATE, image_key

from helpers import FIXTURES, tiny_embodiment

runner = CliRunner()


@pytest.fixture(scope="module")
def src(moto_endpoint):
    """A bucket with one store of 4 episodes, 2 cameras; the environment points at moto for the module."""
    import uuid

    import boto3

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.delenv("AWS_PROFILE", raising=False)
        bucket = f"vla-{uuid.uuid4().hex[:16]}"
        boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
        emb = tiny_embodiment("armA", s=4, a=3, cams=(("front", 16, 16), ("wrist", 16, 16)))
        url = f"s3://{bucket}/demos"
        write_synthetic(EpisodeStore.create(url, [emb]), emb, episodes=4, length=12, seed=0)
        yield f"s3://{bucket}", url


def _same_episode(a: EpisodeStore, i: int, b: EpisodeStore, j: int) -> None:
    ea, eb = a.episode(i), b.episode(j)
    np.testing.assert_array_equal(ea[STATE], eb[STATE])
    np.testing.assert_array_equal(ea[image_key("wrist")], eb[image_key("wrist")])
    assert ea["task"] == eb["task"]


def test_edits_from_and_to_s3(src, tmp_path):
    bucket, url = src
    r = runner.invoke(app, ["data", "stats", url])
    assert r.exit_code == 0, r.output
    assert f"wrote {url}/norm_stats.json" in r.output
    r = runner.invoke(app, ["data", "keep", url, f"{bucket}/kept", "--episodes", "0,2"])
    assert r.exit_code == 0, r.output
    source, kept = EpisodeStore.open(url), EpisodeStore.open(f"{bucket}/kept")
    assert kept.num_episodes == 2
    _same_episode(source, 2, kept, 1)
    from vla.data.remote import url_exists

    assert url_exists(f"{bucket}/kept/norm_stats.json")  # recomputed, as for a local edit
    r = runner.invoke(app, ["data", "split", url, f"{bucket}/train", str(tmp_path / "val"), "--val-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    train, val = EpisodeStore.open(f"{bucket}/train"), EpisodeStore.open(tmp_path / "val")
    assert (train.num_episodes, val.num_episodes) == (3, 1)
    v = val.episode(0, images=False)[STATE]
    (i,) = [i for i in range(4) if np.array_equal(source.episode(i, images=False)[STATE], v)]
    _same_episode(source, i, val, 0)  # the local copy of an S3 episode, images included
    r = runner.invoke(app, ["data", "keep", url, f"{bucket}/kept", "--episodes", "1"])
    assert r.exit_code == 2 and "already exists" in r.output
    # An edit killed midway leaves a store marked unfinished: it does not open, and a rerun replaces it.
    EpisodeStore.create(f"{bucket}/broken", unfinished="edit")
    with pytest.raises(StoreError, match="unfinished"):
        EpisodeStore.open(f"{bucket}/broken")
    r = runner.invoke(app, ["data", "keep", url, f"{bucket}/broken", "--episodes", "3"])
    assert r.exit_code == 0, r.output
    _same_episode(source, 3, EpisodeStore.open(f"{bucket}/broken"), 0)


def test_train_from_s3_through_the_read_cache(src, tmp_path):
    _, url = src
    sys.path.insert(0, str(FIXTURES.parent))
    from train.conftest import write_preset

    preset = write_preset(tmp_path / "p.toml")
    # One DataLoader worker: a forked process, which must open the store's S3 sessions anew.
    args = ["train", str(preset), "--data", url, "--out", str(tmp_path / "ck"), "--steps", "1", "--workers", "1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ck" / "model.safetensors").exists()
    copies = sorted(p.relative_to(tmp_path / "vla-cache").parts[2:] for p in (tmp_path / "vla-cache").rglob("c.*.0"))
    assert copies == [("armA", "front", "c.0.0.0.0"), ("armA", "wrist", "c.0.0.0.0")]


def test_bench_data_on_a_store_on_s3_against_a_local_copy(src, tmp_path):
    from vla.bench.data import run_store

    _, url = src
    r = run_store(url, batches=3, batch_size=8, horizon=10, workers=(0,), repeats=1, workdir=str(tmp_path))
    rates = r["windows_per_s"]
    assert set(rates) == {"local", "s3_warm_cache", "s3_no_cache"}
    assert all(v["workers_0"] > 0 for v in rates.values())
    assert set(r["windows_per_s_first_batches"]) == {"local", "s3_cold_cache"}
    assert r["s3_warm_cache_vs_local"]["workers_0"] > 0 and r["cache_bytes"] > 0 and r["setup"]["episodes"] == 4
    assert r["setup"]["endpoint"].startswith("http://127.0.0.1:")
    json.dumps(r)
    assert not list(tmp_path.iterdir())  # the local copy and the cache were temporary
