"""Stores on S3, against a real S3 API (moto's server over HTTP): create, append, the commit point,
kill -9 of a writer, the writer lease, and the local read cache."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from test_store import check_episode
from typer.testing import CliRunner

from vla.cli import app
from vla.data import EpisodeStore, StoreError
from vla.data.lease import LOCK_NAME, LeaseLock, _machine, _pid_start
from vla.data.remote import storage_options
from vla.data.verify import verify_store
from vla.spec import image_key

from helpers import fill, make_frame


def test_create_append_reopen_through_the_endpoint_in_the_environment(s3, s3_objects, moto_endpoint, emb, tmp_path):
    assert storage_options(s3)["endpoint_url"] == moto_endpoint  # AWS_ENDPOINT_URL, passed explicitly
    url = f"{s3}/stores/a"
    store = EpisodeStore.create(url, [emb])
    fill(store, emb, 1, 5)
    fill(EpisodeStore.open(url, mode="a"), emb, 1, 7, start_ep=1)  # a second writer appends after
    assert not (tmp_path / "vla-cache").exists()  # writers leave the read cache alone
    s = EpisodeStore.open(url + "/")
    assert s.num_episodes == 2 and s.num_frames == 12
    for e, n in ((0, 5), (1, 7)):
        check_episode(s, e, emb, e, n)
    keys = s3_objects("stores/a/")
    assert "stores/a/zarr.json" in keys and "stores/a/tiny/observation/images/front/c.0.0.0.0" in keys
    assert f"stores/a/{LOCK_NAME}" not in keys  # each writer released its lease
    # create never deletes what is at the URL: zarr's mode "w" would have.
    with pytest.raises(StoreError, match="already holds"):
        EpisodeStore.create(url, [emb])
    assert EpisodeStore.create(url, [emb], exist_ok=True).num_episodes == 2
    s3_objects.client.put_object(Bucket=s3_objects.bucket, Key="notes/readme.txt", Body=b"mine")
    with pytest.raises(StoreError, match="readme.txt"):
        EpisodeStore.create(f"{s3}/notes", [emb], exist_ok=True)
    assert "notes/readme.txt" in s3_objects("notes/")
    with pytest.raises(StoreError, match="not an episode store"):
        EpisodeStore.open(f"{s3}/nothing-here")


def _crash_before_commit(store, emb, ep: int, n: int):
    """Write one episode's frames and rows, then die at the commit point: the root PUT never happens
    and nothing is cleaned up (the process is gone; its lease is dropped by hand)."""
    w = store.writer(emb.name, source="test").__enter__()
    for t in range(n):
        w.add_frame(make_frame(emb, ep, t))
    put = store._set_attrs
    store._set_attrs = lambda **kw: (_ for _ in ()).throw(RuntimeError("killed at the commit point"))
    with pytest.raises(RuntimeError, match="killed"):
        w.end_episode(task="lost")
    store._set_attrs = put
    w._lock.release()


def test_the_root_object_is_the_commit_point_and_the_cache_never_serves_stale_frames(
    s3, s3_objects, emb, tmp_path, monkeypatch
):
    url = f"{s3}/store"
    fill(EpisodeStore.create(url, [emb]), emb, 2, 6)
    before = s3_objects.client.get_object(Bucket=s3_objects.bucket, Key="store/zarr.json")["Body"].read()
    _crash_before_commit(EpisodeStore.open(url, mode="a"), emb, ep=77, n=5)
    after = s3_objects.client.get_object(Bucket=s3_objects.bucket, Key="store/zarr.json")["Body"].read()
    assert after == before  # frames, rows and meta are on S3, the commit object is untouched
    reader = EpisodeStore.open(url)
    assert reader.num_episodes == 2
    # This reader's cache copy of shard 0 now holds the dead writer's frames (past its committed end).
    check_episode(reader, 1, emb, 1, 6)
    root = reader.cache_dir()
    assert root is not None and root.is_relative_to(tmp_path)  # VLA_CACHE
    assert [p.relative_to(root).as_posix() for p in root.rglob("c.*.0")] == ["tiny/front/c.0.0.0.0"]
    monkeypatch.setenv("VLA_CACHE", "off")
    direct = EpisodeStore.open(url)
    assert direct.cache_dir() is None
    np.testing.assert_array_equal(direct.episode(1)[image_key("front")], reader.episode(1)[image_key("front")])
    monkeypatch.setenv("VLA_CACHE", str(tmp_path / "vla-cache"))
    # The next writer clears them and writes other frames at the same indices.
    fill(EpisodeStore.open(url, mode="a"), emb, 1, 5, start_ep=2)
    fresh = EpisodeStore.open(url)  # same cache folder (same URL and uid)
    assert fresh.cache_dir() == reader.cache_dir()
    check_episode(fresh, 2, emb, 2, 5)  # not episode 77's frames from the old copy
    # A store made again at the same URL is a new store (new uid): no copy of the old one is used.
    s3_objects.client.delete_objects(
        Bucket=s3_objects.bucket, Delete={"Objects": [{"Key": k} for k in s3_objects("store/")]}
    )
    fill(EpisodeStore.create(url, [emb]), emb, 2, 6, start_ep=40)
    again = EpisodeStore.open(url)
    assert again.cache_dir() != reader.cache_dir()
    check_episode(again, 1, emb, 41, 6)


WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from helpers import make_frame, tiny_embodiment
from vla.data import EpisodeStore
emb = tiny_embodiment()
store = EpisodeStore.open({url!r}, mode="a")
with store.writer(source="killed") as w:
    for e in range(100):
        for t in range(6):
            w.add_frame(make_frame(emb, e, t))
        if e == 2:  # the third episode: stop inside its commit, after its frames and rows are on S3
            def stall(**kw):
                print("in commit", flush=True)
                time.sleep(120)
            store._set_attrs = stall
        w.end_episode(task="task")
        print("committed", e, flush=True)
"""


def test_kill9_of_a_writer_on_s3_loses_only_the_open_episode(s3, s3_objects, emb):
    url = f"{s3}/store"
    EpisodeStore.create(url, [emb])
    from helpers import FIXTURES

    script = WRITER.format(tests=str(FIXTURES.parent), url=url)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("in commit"):
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert lines == ["committed 0", "committed 1", "in commit"], (lines, proc.stderr.read())
    assert f"store/{LOCK_NAME}" in s3_objects("store/")  # the dead writer's lease is still there
    s = EpisodeStore.open(url)
    assert s.num_episodes == 2
    for e in range(2):
        check_episode(s, e, emb, e, 6)
    r = CliRunner().invoke(app, ["data", "verify", url, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{") :])["problems"] == 0
    # A new writer on this machine takes over the dead process's lease at once and appends after.
    fill(EpisodeStore.open(url, mode="a"), emb, 1, 4, start_ep=2)
    s = EpisodeStore.open(url)
    assert s.num_episodes == 3 and [i.length for i in s.infos()] == [6, 6, 4]
    check_episode(s, 2, emb, 2, 4)  # read through the local cache: it holds a good copy now
    # verify reads what S3 holds now, not the cache: a shard object cut short on S3 is found.
    key = "store/tiny/observation/images/front/c.0.0.0.0"
    shard = s3_objects.client.get_object(Bucket=s3_objects.bucket, Key=key)["Body"].read()
    s3_objects.client.put_object(Bucket=s3_objects.bucket, Key=key, Body=shard[:-10])
    r = verify_store(url)
    assert r["problems"] == 1 and r["corrupt"][0]["episode"] == 2 and r["corrupt"][0]["frame"] == 3
    check_episode(EpisodeStore.open(url), 2, emb, 2, 4)  # the cached copy still serves training


def test_one_writer_per_store_on_s3_by_a_lease(s3, s3_objects, emb, caplog, monkeypatch):
    url = f"{s3}/store"
    store = EpisodeStore.create(url, [emb])
    with store.writer() as w:
        with pytest.raises(StoreError, match="another writer .* holds .writer.lock"):
            EpisodeStore.open(url, mode="a").writer().__enter__()
        w.add_frame(make_frame(emb, 0, 0))
        w.end_episode(task="t")
    # When a lease is stale: older than its lease_s by the server's clock, or its process on this
    # machine is gone (the kill -9 test takes one over that way).
    me = {"machine": _machine(), "pid": os.getpid(), "pid_start": _pid_start(os.getpid()), "lease_s": 30}
    lock = LeaseLock(url)
    assert lock._stale(me, age=29) is None and "not renewed for 31 s" in lock._stale(me, age=31)
    assert "is gone" in lock._stale({**me, "pid": 2**22 + 7}, age=0)
    assert lock._stale({**me, "machine": "elsewhere", "pid": 2**22 + 7}, age=0) is None
    # A holder stalled past its lease is taken over (one conditional PUT on the stale ETag); it finds
    # out when it renews before its next commit, and does not commit.
    stalled = LeaseLock(url)
    stalled.acquire()
    with pytest.raises(StoreError, match="another writer"):
        LeaseLock(url).acquire()
    monkeypatch.setattr(LeaseLock, "_stale", lambda self, holder, age: "stalled (as if)")
    taker = LeaseLock(url)
    taker.acquire()
    assert "took over the writer lease" in caplog.text
    with pytest.raises(StoreError, match="lease lost: another writer took the lease over"):
        stalled.check()
    stalled.release()  # and does not delete the lease it lost
    body = s3_objects.client.get_object(Bucket=s3_objects.bucket, Key=f"store/{LOCK_NAME}")["Body"].read()
    assert json.loads(body)["owner"] == taker.owner
    taker.release()
    assert f"store/{LOCK_NAME}" not in s3_objects("store/")
    with store.writer() as w:  # free again
        w.add_frame(make_frame(emb, 1, 0))
        w.end_episode(task="t")
    assert EpisodeStore.open(url).num_episodes == 2
