"""Stores on object storage: URLs, the S3 writer lease, and new stores that appear whole.

A store path with `://` is an fsspec URL (`s3://bucket/prefix`). For S3 the endpoint comes from
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (MinIO, moto, a company gateway), credentials from
the usual AWS chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, an instance
role). Directory listings are never cached, so a writer sees what another left.

One writer per store. On local disk that is an OS lock (vla.data.writer.WriterLock). S3 has no
locks, so a writer holds a lease: the object `<store>/.writer.lock`, created with a conditional
PUT (`If-None-Match: *`: of two writers exactly one creates it) and renewed every third of the
lease by a conditional PUT on its own ETag (`If-Match`). A writer that stops renewing (killed,
cut off) loses the lease once it is `lease_s` old by the server's own clock (the response's Date
against the object's Last-Modified, so no two machines' clocks are compared); one on this machine
whose process is gone loses it at once. Taking over a stale lease is again a conditional PUT
on the ETag that was judged stale, so two writers cannot both take it. Right before each commit
the writer renews its lease (the same conditional PUT) and stops if another writer has it now.

New stores written by edits and imports appear whole or not at all: on local disk they are built
in a temporary folder and renamed; on object storage (no rename) they are built in place with an
`unfinished` mark in the root attributes, which `EpisodeStore.open` refuses, and the last write
of the build (one PUT of the root zarr.json) removes it.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vla.data.frame_files import StoreError

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
LEASE_S = 30.0  # a writer renews every LEASE_S / 3; a lease not renewed for LEASE_S is stale
S3_SCHEMES = ("s3", "s3a")


def is_url(path) -> bool:
    return "://" in str(path)


def scheme(url: str) -> str:
    return str(url).split("://", 1)[0].lower()


def join(path, name: str) -> str | Path:
    """`path/name` for a local path (a Path) or a URL (a string)."""
    return f"{str(path).rstrip('/')}/{name}" if is_url(path) else Path(path) / name


def storage_options(url: str) -> dict:
    """fsspec options for a store URL, in one place. S3: the endpoint from the environment, passed
    explicitly (fsspec caches a filesystem per set of options, so a changed endpoint is a new one);
    no listing cache (a writer must see the shards another writer left); whole-object reads in one
    GET (s3fs's concurrent download first asks for the size: a HEAD, and a LIST when the object is
    missing, on every read of zarr metadata; shard objects are tens of MB at most)."""
    if scheme(url) in S3_SCHEMES:
        opts: dict = {"use_listings_cache": False, "max_concurrency": 1}
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            opts["endpoint_url"] = endpoint
        return opts
    return {}


def filesystem(url: str):
    """-> (fsspec filesystem, path inside it) for a store URL."""
    import fsspec

    try:
        return fsspec.url_to_fs(str(url), **storage_options(url))
    except (ImportError, ValueError) as e:
        hint = " (pip install 'vla[s3]')" if scheme(url) in S3_SCHEMES else ""
        raise StoreError(f"{url}: no filesystem for this URL{hint}: {e}") from None


def _reach_error(url: str, e: Exception) -> StoreError:
    hint = ""
    if scheme(url) in S3_SCHEMES:
        hint = (
            "; check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE) and, for a "
            "service other than AWS, AWS_ENDPOINT_URL"
        )
    return StoreError(f"{url}: cannot reach it: {type(e).__name__}: {e}{hint}")


def url_exists(url: str) -> bool:
    """Is there an object at `url`? Errors other than 'not found' name credentials and endpoint."""
    fs, path = filesystem(url)
    try:
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False
    except Exception as e:  # botocore raises several types for a missing endpoint or credentials
        raise _reach_error(url, e) from None


def url_entries(url: str) -> list[str]:
    """Names directly under a URL prefix ([] when nothing is there)."""
    fs, path = filesystem(url)
    try:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    except Exception as e:
        raise _reach_error(url, e) from None


def write_bytes(path, data: bytes) -> None:
    """One whole file (local: temp file and rename) or object (one PUT)."""
    if is_url(path):
        fs, p = filesystem(str(path))
        fs.pipe_file(p, data)
        return
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".partial")
    tmp.write_bytes(data)
    tmp.replace(path)


def read_bytes(path) -> bytes:
    if is_url(path):
        fs, p = filesystem(str(path))
        return fs.cat_file(p)
    return Path(path).read_bytes()


def exists(path) -> bool:
    return url_exists(str(path)) if is_url(path) else Path(path).exists()


# ---- new stores that appear whole ----
@dataclass
class NewStore:
    """Where to build a new store: `path` to create it at, and the `unfinished` mark to create it
    with (None on local disk, where the rename is the commit)."""

    path: str | Path
    unfinished: str | None


def _root_attrs(url: str) -> dict | None:
    try:
        meta = json.loads(read_bytes(join(url, "zarr.json")))
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return meta.get("attributes", {}) if isinstance(meta, dict) else {}


def check_new_store(dst, what: str) -> bool:
    """Refuse a dst that holds anything but an unfinished store (True: one to replace)."""
    if not is_url(dst):
        if Path(dst).exists():
            raise StoreError(f"{dst}: already exists; {what} writes a new store")
        return False
    if not url_entries(dst):
        return False
    attrs = _root_attrs(dst)
    if not (attrs and attrs.get("unfinished")):
        raise StoreError(f"{dst}: already exists; {what} writes a new store (choose another URL)")
    return True


@contextlib.contextmanager
def new_store(dst, what: str) -> Iterator[NewStore]:
    """Build a new store at dst, whole or not at all. Local: in `<dst>.<what>ing` beside it,
    renamed on success, removed on failure. URL: in place, created with an `unfinished` mark that
    the builder's last step (EpisodeStore.finish) removes; an unfinished store left by a killed
    build is replaced, anything else at dst is refused. On failure the partial store is removed
    (a killed process leaves it, marked unfinished: open refuses it, the next build replaces it)."""
    replace = check_new_store(dst, what)
    if not is_url(dst):
        dst = Path(dst)
        tmp = dst.with_name(f"{dst.name}.{what}ing")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            yield NewStore(tmp, None)
            tmp.rename(dst)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return
    url = str(dst).rstrip("/")
    if replace:
        log.warning("%s: replacing an unfinished store left by a command that stopped", url)
        remove(url)
    try:
        yield NewStore(url, what)
    except BaseException:
        with contextlib.suppress(Exception):
            remove(url)
        raise


def remove(path) -> None:
    """Delete a store (local folder or every object under a URL prefix)."""
    if not is_url(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = filesystem(str(path))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(p, recursive=True)


# ---- the S3 writer lease ----
def _machine() -> str:
    """This machine and PID namespace: a process of the same value can be checked for life."""
    parts = [socket.gethostname()]
    for f in ("/proc/sys/kernel/random/boot_id",):
        with contextlib.suppress(OSError):
            parts.append(Path(f).read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start is None or _pid_start(pid) in (None, start)


def _lost_race(e: BaseException) -> bool:
    """A conditional request refused: 412 PreconditionFailed (the object is not as we saw it), 409
    ConditionalRequestConflict (a concurrent conditional write won). s3fs turns the first into
    FileExistsError after If-None-Match, into a plain OSError after If-Match."""
    if isinstance(e, FileExistsError):
        return True
    cause = e.__cause__ or e.__context__
    code = getattr(cause, "response", {}).get("Error", {}).get("Code")
    return code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409") or "pre-condition" in str(e)


class LeaseLock:
    """One writer per store on S3: a lease object renewed by the holder (module docstring).
    Same interface as WriterLock: acquire / release / held / check, a context manager."""

    def __init__(self, url: str, lease_s: float | None = None):
        self.url = str(url).rstrip("/")
        self.lease_s = float(lease_s if lease_s is not None else os.environ.get("VLA_LEASE_S", LEASE_S))
        self._fs, root = filesystem(self.url)
        bucket, key, _ = self._fs.split_path(f"{root.rstrip('/')}/{LOCK_NAME}")
        self._where = {"Bucket": bucket, "Key": key}
        self.owner = uuid.uuid4().hex
        self._etag: str | None = None
        self._renewed = 0.0  # time.monotonic() of the last successful PUT
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mutex = threading.Lock()

    @property
    def held(self) -> bool:
        return self._etag is not None and self._lost is None

    def _body(self) -> bytes:
        pid = os.getpid()
        return json.dumps(
            {
                "owner": self.owner,
                "host": socket.gethostname(),
                "machine": _machine(),
                "pid": pid,
                "pid_start": _pid_start(pid),
                "lease_s": self.lease_s,
            }
        ).encode()

    def _put(self, **condition) -> str:
        r = self._fs.call_s3("put_object", Body=self._body(), **self._where, **condition)
        self._renewed = time.monotonic()
        return r["ETag"]

    def _read(self) -> tuple[dict, str, float] | None:
        """The lease object: (its JSON, ETag, age in seconds by the server's clock), None when gone."""

        async def get():
            r = await self._fs._call_s3("get_object", **self._where)
            return r, await r["Body"].read()

        from fsspec.asyn import sync

        try:
            r, body = sync(self._fs.loop, get)
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(body)
        except ValueError:
            holder = {}
        date = r["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
        return holder, r["ETag"], now - r["LastModified"].timestamp()

    def _stale(self, holder: dict, age: float) -> str | None:
        """Why a lease may be taken over, or None while its holder may be alive."""
        lease = float(holder.get("lease_s", self.lease_s))
        if age > lease:
            return f"not renewed for {age:.0f} s (lease {lease:.0f} s)"
        pid = holder.get("pid")
        if holder.get("machine") == _machine() and isinstance(pid, int) and not _alive(pid, holder.get("pid_start")):
            return f"its process {pid} on this machine is gone"
        return None

    def acquire(self) -> None:
        """Take the lease or raise StoreError naming the holder and when its lease lapses."""
        if self.held:
            raise StoreError(f"{self.url}: this writer already holds the lease")
        self._lost = None
        try:
            for _ in range(3):
                try:
                    self._etag = self._put(IfNoneMatch="*")
                    break
                except OSError as e:
                    if not _lost_race(e):
                        raise
                seen = self._read()
                if seen is None:  # released meanwhile: try to create it again
                    continue
                holder, etag, age = seen
                why = self._stale(holder, age)
                who = f"{holder.get('host', '?')} pid {holder.get('pid', '?')}"
                if why is None:
                    lease = float(holder.get("lease_s", self.lease_s))
                    raise StoreError(
                        f"{self.url}: another writer ({who}) holds {LOCK_NAME}, renewed {max(age, 0):.0f} s ago; "
                        f"wait for it to finish (a writer that died on another machine loses it {lease:.0f} s after "
                        "its last renewal)"
                    )
                try:
                    self._etag = self._put(IfMatch=etag)
                except FileNotFoundError:
                    continue  # released meanwhile: look again
                except OSError as e:
                    if not _lost_race(e):
                        raise
                    continue  # someone else took it first: look again
                log.warning("%s: took over the writer lease of %s: %s", self.url, who, why)
                break
            else:
                raise StoreError(f"{self.url}: could not take {LOCK_NAME}: other writers keep taking it")
        except (StoreError, PermissionError):  # PermissionError: a read-only user (edits read unlocked)
            raise
        except Exception as e:
            raise _reach_error(self.url, e) from None
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="vla-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        """One conditional PUT on our own ETag; sets _lost when another writer has the lease now."""
        with self._mutex:
            if self._etag is None or self._lost:
                return
            try:
                self._etag = self._put(IfMatch=self._etag)
            except Exception as e:
                if isinstance(e, FileNotFoundError) or _lost_race(e):
                    self._lost = "another writer took the lease over (this one had not renewed it in time)"
                    return
                # the network: keep trying while the lease lasts
                log.warning("%s: could not renew the writer lease: %s", self.url, e)
                if time.monotonic() - self._renewed > self.lease_s:
                    self._lost = f"not renewed for over {self.lease_s:.0f} s ({e})"

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3) and not self._lost:
            self._renew()

    def check(self) -> None:
        """Renew the lease now, or raise StoreError when it is no longer ours: the writer calls it
        right before each commit, so a writer that lost its lease never commits."""
        if self._etag is None:
            raise StoreError(f"{self.url}: this writer holds no lease")
        self._renew()
        if self._lost:
            raise StoreError(f"{self.url}: writer lease lost: {self._lost}; this episode is not committed")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None
        with self._mutex:
            etag, self._etag = self._etag, None
        if etag is None or self._lost:
            return
        try:
            self._fs.call_s3("delete_object", IfMatch=etag, **self._where)
        except Exception as e:
            if isinstance(e, FileNotFoundError) or _lost_race(e):
                return  # taken over or gone: not ours to delete
            log.warning("%s: could not remove the writer lease (%s); the next writer takes it over", self.url, e)

    def __enter__(self) -> "LeaseLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
