"""Wire format shared by the policy server, its clients and the sim robot process: msgpack-numpy.

Byte-compatible with openpi's `openpi_client.msgpack_numpy`: an ndarray travels as the map
`{__ndarray__: True, data: <raw bytes>, dtype: <numpy dtype str>, shape: [...]}` and a numpy
scalar as `{__npgeneric__: True, data, dtype}`, with the map keys as msgpack *bin* (bytes), as
openpi packs them. Object, void and complex dtypes are refused both ways: nothing is ever
unpickled. Unpacking validates every array map (dtype, shape, byte count) and raises
`WireError` naming the offending key instead of crashing on hostile input.

Imports numpy and msgpack only, so a robot-side process never needs torch. `vla.runtime.wire`
re-exports this module.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np

__all__ = [
    "MAX_ARRAY_DIMS",
    "MAX_MESSAGE_BYTES",
    "WireError",
    "packb",
    "recv_frame",
    "send_frame",
    "str_keys",
    "unpackb",
]

# The policy server's defaults; the server checks the size before unpacking.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_ARRAY_DIMS = 8
_BAD_KINDS = ("V", "O", "c")


class WireError(ValueError):
    """A message could not be decoded or does not have the expected layout."""


def _pack_default(obj):
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _BAD_KINDS:
        raise WireError(f"cannot send dtype {obj.dtype} (object, void and complex arrays are refused)")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise WireError(f"cannot send an object of type {type(obj).__name__}")


def _get(d: dict, key: str):
    return d[key.encode()] if key.encode() in d else d.get(key)


def _has(d: dict, key: str) -> bool:
    return key.encode() in d or key in d


def _dtype(value) -> np.dtype:
    try:
        dt = np.dtype(value.decode() if isinstance(value, bytes) else str(value))
    except TypeError:
        raise WireError(f"unknown dtype {value!r}") from None
    if dt.kind in _BAD_KINDS:
        raise WireError(f"dtype {dt} is refused (object, void and complex arrays are never decoded)")
    return dt


def _unpack_hook(d: dict):
    if _has(d, "__ndarray__"):
        dt = _dtype(_get(d, "dtype"))
        shape, data = _get(d, "shape"), _get(d, "data")
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) > MAX_ARRAY_DIMS
            or not all(isinstance(n, int) and n >= 0 for n in shape)
        ):
            raise WireError(f"array shape must be a list of at most {MAX_ARRAY_DIMS} non-negative ints, got {shape!r}")
        if not isinstance(data, bytes):
            raise WireError(f"array data must be bytes, got {type(data).__name__}")
        n = dt.itemsize * int(np.prod(shape, dtype=np.int64))
        if n != len(data):
            raise WireError(f"array of shape {tuple(shape)} and dtype {dt} needs {n} bytes, got {len(data)}")
        return np.frombuffer(bytearray(data), dtype=dt).reshape(shape)  # writable (torch warns on read-only)
    if _has(d, "__npgeneric__"):
        dt = _dtype(_get(d, "dtype"))
        try:
            return dt.type(_get(d, "data"))
        except (TypeError, ValueError, OverflowError) as e:
            raise WireError(f"bad numpy scalar of dtype {dt}: {e}") from None
    return d


def packb(obj) -> bytes:
    """Python/numpy object -> msgpack bytes (openpi layout)."""
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


def unpackb(data: bytes, *, max_bytes: int | None = None):
    """msgpack bytes -> object; arrays come back as numpy arrays. Raises WireError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(f"expected a binary message, got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise WireError(f"message of {len(data)} bytes is over the limit of {max_bytes} bytes")
    try:
        return msgpack.unpackb(data, object_hook=_unpack_hook, raw=False, strict_map_key=False)
    except WireError:
        raise
    except (ValueError, TypeError, msgpack.exceptions.ExtraData, msgpack.exceptions.UnpackException) as e:
        raise WireError(f"not a msgpack message: {type(e).__name__}: {e}") from None


def str_keys(d: dict) -> dict:
    """Top-level bytes keys -> str (clients of other languages may send bin keys)."""
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in d.items()}


# ---- length-prefixed framing over a plain stream socket (the sim robot process) ----
_HEADER = struct.Struct("!I")


def send_frame(sock, obj) -> None:
    data = packb(obj)
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("connection closed by the peer")
        buf += part
    return bytes(buf)


def recv_frame(sock, *, max_bytes: int = MAX_MESSAGE_BYTES):
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    if n > max_bytes:
        raise WireError(f"frame of {n} bytes is over the limit of {max_bytes} bytes")
    return unpackb(_recv_exact(sock, n))
