"""The wire format (msgpack-numpy, openpi's layout): lives in the `vla-client` distribution.

Re-exported here so `vla.runtime.wire.packb` etc. keep working; see `vla_client/wire.py`
(packages/vla-client).
"""

from vla_client.wire import (
    MAX_ARRAY_DIMS,
    MAX_MESSAGE_BYTES,
    WireError,
    packb,
    recv_frame,
    send_frame,
    str_keys,
    unpackb,
)

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
