"""The S3 writer lease: one writer per store on object storage.

On local disk one writer is an OS lock (vla.data.writer.WriterLock). S3 has no
locks, so a writer holds a lease: the object `<store>/.writer.lock`, created with a conditional
PUT (`If-None-Match: *`: of two writers exactly one creates it) and renewed every third of the
lease by a conditional PUT on its own ETag (`If-Match`). A writer that stops renewing (killed,
cut off) loses the lease once it is `lease_s` old by the server's own clock (the response's Date
against the object's Last-Modified, so no two machines' clocks are compared); one on this machine
whose process is gone loses it at once. Taking over a stale lease is again a conditional PUT
on the ETag that was judged stale, so two writers cannot both take it. Right before each commit
the writer renews its lease (the same conditional PUT) and stops if another writer has it now.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from vla.data.frame_files import StoreError
from vla.data.remote import filesystem, reach_error

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
LEASE_S = 30.0  # a writer renews every LEASE_S / 3; a lease not renewed for LEASE_S is stale


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
            raise reach_error(self.url, e) from None
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
            try:  # a service without conditional deletes: delete it if it is still ours
                seen = self._read()
                if seen is not None and seen[0].get("owner") == self.owner:
                    self._fs.call_s3("delete_object", **self._where)
            except Exception:
                log.warning("%s: could not remove the writer lease (%s); the next writer takes it over", self.url, e)

    def __enter__(self) -> "LeaseLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
