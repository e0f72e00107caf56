"""RemotePolicy: the client of a policy server (ours or openpi's), with Policy's interface.

    policy = RemotePolicy("ws://127.0.0.1:8000", api_key=None)
    policy.metadata                      # sent by the server on connect
    out = policy.infer(obs)              # {"actions": float32 [h, a], "server_timing": ..., ...}

Imports numpy, msgpack and websockets only, so a robot-side process never needs torch.
`vla.runtime.client` re-exports this module.
A lost connection is re-opened on the next `infer` (one attempt, `connect_timeout_s`); callers
that must keep going (the control loop) catch `PolicyUnavailable` and retry later.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from vla_client.wire import WireError, packb, str_keys, unpackb

__all__ = ["PolicyUnavailable", "RemotePolicy", "RemotePolicyError"]

log = logging.getLogger(__name__)


class PolicyUnavailable(ConnectionError):
    """The policy server cannot be reached (not started, killed, or refused us)."""


class RemotePolicyError(RuntimeError):
    """The server answered a request with an error (text frame), e.g. a malformed observation."""


class RemotePolicy:
    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        connect_timeout_s: float = 10.0,
        timeout_s: float = 30.0,
        wait_s: float = 0.0,
    ):
        """Connect to `url` (ws://host:port). `wait_s` > 0 keeps retrying that long (server still starting)."""
        if not url.startswith(("ws://", "wss://")):
            url = "ws://" + url
        self.url = url
        self.api_key = api_key
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._ws = None
        self._metadata: dict = {}
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._connect()
                break
            except PolicyUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _connect(self) -> None:
        import websockets
        from websockets.sync.client import connect

        headers = {"Authorization": f"Api-Key {self.api_key}"} if self.api_key else None
        try:
            # Entered by hand: the connection outlives this call (closed in close()).
            ws = connect(
                self.url,
                compression=None,
                max_size=None,
                additional_headers=headers,
                open_timeout=self.connect_timeout_s,
            ).__enter__()
        except websockets.InvalidStatus as e:
            status = e.response.status_code
            body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
            raise PolicyUnavailable(f"{self.url} refused the connection (HTTP {status}): {body}") from None
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise PolicyUnavailable(f"cannot reach the policy server at {self.url}: {e}") from None
        try:
            first = ws.recv(timeout=self.connect_timeout_s)
            meta = unpackb(first) if isinstance(first, bytes) else None
        except (WireError, TimeoutError, websockets.WebSocketException) as e:
            ws.close()
            raise PolicyUnavailable(f"{self.url} did not send its metadata: {e}") from None
        if not isinstance(meta, dict):
            ws.close()
            raise PolicyUnavailable(f"{self.url} sent {type(meta).__name__} instead of a metadata map")
        self._ws, self._metadata = ws, str_keys(meta)
        log.info("connected to policy server %s (%s)", self.url, self._metadata.get("policy_type", "?"))

    @property
    def metadata(self) -> dict:
        return self._metadata

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def reset(self) -> None:
        """The server is stateless between calls; kept for the PolicyLike contract."""

    def infer(
        self,
        obs: dict,
        *,
        guide: np.ndarray | None = None,
        guide_weights: np.ndarray | None = None,
        rtc: dict | None = None,
    ) -> dict:
        """One chunk. guide / guide_weights: real-time chunking by inpainting; rtc: the request of the
        other RTC modes ({"mode", "prev_chunk" [h', a], "inference_delay", "execution_horizon",
        "schedule", "max_guidance_weight"}), sent as the observation's `rtc` map."""
        import websockets

        if self._ws is None:
            self._connect()
        msg = dict(obs)
        if guide is not None:
            msg["guide"] = np.asarray(guide, np.float32)
            msg["guide_weights"] = np.asarray(guide_weights, np.float32)
        if rtc is not None:
            msg["rtc"] = {k: np.asarray(v, np.float32) if k == "prev_chunk" else v for k, v in rtc.items()}
        data = packb(msg)
        try:
            self._ws.send(data)
            reply = self._ws.recv(timeout=self.timeout_s)
        except (websockets.ConnectionClosed, OSError) as e:
            self.close()
            raise PolicyUnavailable(f"lost the connection to {self.url}: {e}") from None
        except TimeoutError:
            self.close()  # the late reply would pair with the next request otherwise
            raise PolicyUnavailable(f"{self.url} did not answer within {self.timeout_s} s") from None
        if isinstance(reply, str):
            raise RemotePolicyError(f"policy server {self.url}: {reply}")
        out = str_keys(unpackb(reply))
        if "actions" not in out:
            raise RemotePolicyError(f"policy server {self.url}: reply has no 'actions' (keys {sorted(out)})")
        out["actions"] = np.array(out["actions"], dtype=np.float32)  # writable copy
        return out

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # already broken; nothing to release
                pass
            self._ws = None

    def __enter__(self) -> "RemotePolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
