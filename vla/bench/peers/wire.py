"""Messages between vla and a peer process over its stdin/stdout: one frame per message.

A frame is a 4-byte big-endian length, that many bytes of JSON (the header), then the raw bytes
of each array the header lists under "_arrays" ([name, dtype, shape] in order). Standard library
and numpy only: the peer's side runs this file inside another virtual environment (LeRobot's),
which has neither vla nor msgpack.
"""

from __future__ import annotations

import json
import select
import struct
import time

import numpy as np

MAX_HEADER = 1 << 20  # bytes; a larger length prefix means the stream is not speaking this protocol
MAX_ARRAY = 1 << 28
DTYPES = ("uint8", "int32", "int64", "float32", "float64", "bool")


class WireError(RuntimeError):
    """The other side broke the protocol, closed the pipe, or did not answer in time."""


def encode(header: dict, arrays: dict | None = None) -> bytes:
    arrays = {k: np.ascontiguousarray(v) for k, v in (arrays or {}).items()}
    for k, a in arrays.items():
        if a.dtype.name not in DTYPES:
            raise WireError(f"array {k!r}: dtype {a.dtype} not sent (one of {DTYPES})")
    head = dict(header)
    head["_arrays"] = [[k, a.dtype.name, list(a.shape)] for k, a in arrays.items()]
    text = json.dumps(head).encode()
    return b"".join([struct.pack(">I", len(text)), text, *(a.tobytes() for a in arrays.values())])


def write_msg(stream, header: dict, arrays: dict | None = None) -> None:
    stream.write(encode(header, arrays))
    stream.flush()


def _read_exact(stream, n: int, deadline: float | None) -> bytes:
    parts, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stream], [], [], left)[0]:
                raise WireError("no answer in time")
        chunk = stream.read(n - got)  # a raw stream returns what is there, a buffered one waits for all
        if not chunk:
            raise EOFError("the other side closed the stream")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def read_msg(stream, timeout: float | None = None) -> tuple[dict, dict]:
    """-> (header, arrays). `timeout` (seconds) needs an unbuffered stream (select on its descriptor)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    (n,) = struct.unpack(">I", _read_exact(stream, 4, deadline))
    if n > MAX_HEADER:
        raise WireError(f"header of {n} bytes: the stream is not speaking this protocol")
    try:
        head = json.loads(_read_exact(stream, n, deadline))
        specs = head.pop("_arrays")
    except (ValueError, KeyError, AttributeError) as e:
        raise WireError(f"malformed header: {e}") from None
    arrays = {}
    for name, dtype, shape in specs:
        if dtype not in DTYPES:
            raise WireError(f"array {name!r}: dtype {dtype!r} not one of {DTYPES}")
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if size > MAX_ARRAY:
            raise WireError(f"array {name!r} of {size} bytes is over the limit")
        arrays[name] = np.frombuffer(_read_exact(stream, size, deadline), dtype).reshape(shape)
    return head, arrays
