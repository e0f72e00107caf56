"""vla-client: the robot-side client of a `vla serve` (or openpi) policy server.

    from vla_client import RemotePolicy
    with RemotePolicy("ws://127.0.0.1:8000") as policy:
        policy.metadata                  # sent by the server on connect
        actions = policy.infer(obs)["actions"]   # float32 [h, a]

Depends on numpy, msgpack and websockets only: a robot process never imports torch.
`vla.runtime.client` and `vla.runtime.wire` re-export these names.
"""

from vla_client.client import PolicyUnavailable, RemotePolicy, RemotePolicyError
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

__version__ = "0.1.0"

__all__ = [
    "MAX_ARRAY_DIMS",
    "MAX_MESSAGE_BYTES",
    "PolicyUnavailable",
    "RemotePolicy",
    "RemotePolicyError",
    "WireError",
    "packb",
    "recv_frame",
    "send_frame",
    "str_keys",
    "unpackb",
]
