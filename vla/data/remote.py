"""Stores on object storage: URLs, fsspec access in one place, and new stores that appear whole.

A store path with `://` is an fsspec URL (`s3://bucket/prefix`). For S3 the endpoint comes from
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (MinIO, moto, a company gateway), credentials from
the usual AWS chain (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, an instance
role). Directory listings are never cached, so a writer sees what another left. One writer per
store on S3: vla.data.lease.

New stores written by edits and imports appear whole or not at all: on local disk they are built
in a temporary folder and renamed; on object storage (no rename) they are built in place with an
`unfinished` mark in the root attributes, which `EpisodeStore.open` refuses, and the last write
of the build (one PUT of the root zarr.json) removes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vla.data.frame_files import StoreError

log = logging.getLogger(__name__)

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

    for name in ("aiobotocore.credentials", "botocore.credentials"):  # "Found credentials in ..." on every command
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return fsspec.url_to_fs(str(url), **storage_options(url))
    except (ImportError, ValueError) as e:
        hint = " (pip install 'vla[s3]')" if scheme(url) in S3_SCHEMES else ""
        raise StoreError(f"{url}: no filesystem for this URL{hint}: {e}") from None


def reach_error(url: str, e: Exception) -> StoreError:
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
        raise reach_error(url, e) from None


def url_entries(url: str) -> list[str]:
    """Names directly under a URL prefix ([] when nothing is there)."""
    fs, path = filesystem(url)
    try:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    except Exception as e:
        raise reach_error(url, e) from None


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
