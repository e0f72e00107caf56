"""Policy server: websocket + msgpack-numpy, wire-compatible with openpi's `WebsocketPolicyServer`.

    server = PolicyServer(load_policy(ckpt), ServerConfig(port=8000, api_key="secret"))
    server.serve_forever()          # or .start() / .stop() to run it in a background thread

In the background, a crash of the server thread after it started is logged, kept in `.error`,
and raised again by `.raise_if_failed()`, `.stop()` and `.url`, so it is never lost.

Protocol (as openpi): on connect the server sends the packed metadata dict first; then each
binary message is one observation (a map of frame keys; the instruction as `task` or openpi's
`prompt`) and each reply the packed dict `{"actions": float32 [h, a], "malformed", "policy_timing",
"server_timing": {"infer_ms", "prev_total_ms"}}`. `GET /healthz` answers 200 without a key.
Errors come back as a text frame that names the key; unlike openpi the connection stays open, so
one bad message does not cost the client its session, and other clients are never affected.

Extensions (openpi clients send none of them): an observation may carry `rtc`, a map with the keys
of `Policy.infer`'s real-time chunking request (`mode`, `prev_chunk` float [h', a], `inference_delay`,
`execution_horizon`, `schedule`, `max_guidance_weight`), or `guide` [h, a] and `guide_weights` [h]
(inpainting with the caller's weights). The metadata's `rtc` says which modes the checkpoint takes.

Inference runs in one worker thread, so the event loop keeps answering `/healthz`, pings and
new connections while a chunk is computed; concurrent clients are served in arrival order.
"""

from __future__ import annotations

import asyncio
import hmac
import http
import logging
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vla.runtime.wire import MAX_MESSAGE_BYTES, WireError, packb, str_keys, unpackb
from vla.spec import SpecError

log = logging.getLogger(__name__)
logging.getLogger("websockets.server").setLevel(logging.WARNING)  # one INFO line per HTTP response otherwise

GUIDE, GUIDE_WEIGHTS, RTC = "guide", "guide_weights", "rtc"


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port (see PolicyServer.port)
    api_key: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError(f"server port must be in 0..65535, got {self.port}")
        if self.max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be > 0, got {self.max_message_bytes}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must be non-empty when given")


class BadRequest(ValueError):
    """The client sent something the server cannot use; the message names the key."""


def decode_observation(msg, max_bytes: int) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
    """One websocket message -> (observation, guide, guide_weights). Raises BadRequest. An `rtc`
    request stays in the observation (see `pop_rtc`)."""
    if isinstance(msg, str):
        raise BadRequest("expected a binary msgpack observation, got a text frame")
    try:
        obs = unpackb(msg, max_bytes=max_bytes)
    except WireError as e:
        raise BadRequest(str(e)) from None
    if not isinstance(obs, dict):
        raise BadRequest(f"expected a map of observation keys, got {type(obs).__name__}")
    obs = str_keys(obs)
    if obs.get(RTC) is not None and obs.get(GUIDE) is not None:
        raise BadRequest(f"key {RTC!r} and key {GUIDE!r}: send one of them")
    guide, weights = obs.pop(GUIDE, None), obs.pop(GUIDE_WEIGHTS, None)
    if (guide is None) != (weights is None):
        raise BadRequest(f"key {GUIDE!r} and key {GUIDE_WEIGHTS!r} go together; got only one")
    if guide is not None:
        guide, weights = np.asarray(guide), np.asarray(weights)
        if guide.ndim != 2 or not np.issubdtype(guide.dtype, np.floating):
            raise BadRequest(f"key {GUIDE!r}: expected float [h, a], got {guide.dtype} {guide.shape}")
        if weights.shape != (guide.shape[0],) or not np.issubdtype(weights.dtype, np.floating):
            raise BadRequest(
                f"key {GUIDE_WEIGHTS!r}: expected float [{guide.shape[0]}], got {weights.dtype} {weights.shape}"
            )
        if not (np.isfinite(guide).all() and np.isfinite(weights).all()):
            raise BadRequest(f"key {GUIDE!r}/{GUIDE_WEIGHTS!r}: non-finite values")
    return obs, guide, weights


def pop_rtc(obs: dict) -> dict | None:
    """The observation's real-time chunking request (its keys as str), removed from it; None if it
    has none. Its values are checked by the policy (a bad one comes back as an error frame)."""
    rtc = obs.pop(RTC, None)
    if rtc is None:
        return None
    if not isinstance(rtc, dict):
        raise BadRequest(
            f"key {RTC!r}: expected a map (mode, prev_chunk, inference_delay, ...), got {type(rtc).__name__}"
        )
    return str_keys(rtc)


def encode_reply(out: dict, infer_ms: float, prev_total_ms: float | None) -> bytes:
    reply = {k: v for k, v in out.items()}
    reply["actions"] = np.asarray(out["actions"], dtype=np.float32)
    timing = {"infer_ms": infer_ms}
    if prev_total_ms is not None:
        timing["prev_total_ms"] = prev_total_ms
    reply["server_timing"] = timing
    return packb(reply)


class PolicyServer:
    def __init__(self, policy, config: ServerConfig = ServerConfig(), metadata: dict | None = None):
        self.policy = policy
        self.config = config
        self.metadata = dict(metadata if metadata is not None else getattr(policy, "metadata", {}) or {})
        self.port: int | None = None
        self.counters = {"connections": 0, "requests": 0, "errors": 0, "refused": 0}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infer")
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None  # why serve_forever() ended, if it failed

    # ---- HTTP side: health check and API key ----
    def _process_request(self, connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        key = self.config.api_key
        if key is not None:
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Api-Key {key}".encode()):
                self.counters["refused"] += 1
                log.warning(
                    "refused a connection from %s: %s API key", connection.remote_address, "wrong" if got else "no"
                )
                return connection.respond(
                    http.HTTPStatus.UNAUTHORIZED,
                    "missing or wrong API key; send the header 'Authorization: Api-Key KEY'\n",
                )
        return None

    # ---- websocket side ----
    def _infer(self, obs, guide, weights, rtc=None) -> dict:
        if rtc is not None:
            return self.policy.infer(obs, rtc=rtc)
        if guide is None:
            return self.policy.infer(obs)
        return self.policy.infer(obs, guide=guide, guide_weights=weights)

    async def _handler(self, ws):
        import websockets

        self.counters["connections"] += 1
        peer = ws.remote_address
        log.info("client connected: %s", peer)
        loop = asyncio.get_running_loop()
        prev_total_ms = None
        try:
            await ws.send(packb(self.metadata))
            while True:
                msg = await ws.recv()
                t0 = time.monotonic()
                try:
                    obs, guide, weights = decode_observation(msg, self.config.max_message_bytes)
                    rtc = pop_rtc(obs)
                    t1 = time.monotonic()
                    out = await loop.run_in_executor(self._pool, self._infer, obs, guide, weights, rtc)
                    infer_ms = (time.monotonic() - t1) * 1000
                    if not isinstance(out, dict) or "actions" not in out:
                        raise RuntimeError(f"policy returned {type(out).__name__}, expected a dict with 'actions'")
                    reply = encode_reply(out, infer_ms, prev_total_ms)
                except (BadRequest, ValueError, KeyError, TypeError) as e:
                    # Bad input (SpecError and WireError are ValueErrors): tell this client, keep serving.
                    self.counters["errors"] += 1
                    log.warning("bad request from %s: %s", peer, e)
                    await ws.send(f"error: {e}")
                    continue
                except Exception as e:
                    self.counters["errors"] += 1
                    log.error("inference failed for %s:\n%s", peer, traceback.format_exc())
                    await ws.send(f"internal error: {type(e).__name__}: {e}")
                    continue
                self.counters["requests"] += 1
                await ws.send(reply)
                prev_total_ms = (time.monotonic() - t0) * 1000
        except websockets.ConnectionClosed:
            pass
        finally:
            log.info("client disconnected: %s", peer)

    async def _run(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        c = self.config
        # The hard cap only stops absurd frames early; the soft limit (max_message_bytes) gets a text reply.
        async with serve(
            self._handler,
            c.host,
            c.port,
            compression=None,
            max_size=4 * c.max_message_bytes + (1 << 20),
            process_request=self._process_request,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info(
                "policy server on ws://%s:%d (healthz: http://%s:%d/healthz)%s",
                c.host,
                self.port,
                c.host,
                self.port,
                ", API key required" if c.api_key else "",
            )
            self._ready.set()
            await self._stop.wait()

    def serve_forever(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as e:
            self._error = e
            if self._ready.is_set() and isinstance(e, Exception):  # it was serving: clients now get refused; say why
                log.error("policy server on port %s crashed: %s: %s", self.port, type(e).__name__, e, exc_info=e)
            self._ready.set()
            raise
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- background use (tests, local isolation) ----
    @property
    def error(self) -> BaseException | None:
        """The exception that ended the server (a failed start or a crash), or None."""
        return self._error

    def raise_if_failed(self) -> None:
        """Raise RuntimeError (chained to the cause) if the server failed to start or crashed."""
        e = self._error
        if e is not None:
            when = "crashed" if self.port is not None else "failed to start"
            raise RuntimeError(f"policy server {when}: {type(e).__name__}: {e}") from e

    def start(self, timeout_s: float = 10.0) -> "PolicyServer":
        def target():
            try:
                self.serve_forever()
            except BaseException:  # kept in self._error (and logged if it was serving); raised by the methods below
                pass

        self._thread = threading.Thread(target=target, name="policy-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"policy server did not start within {timeout_s} s")
        self.raise_if_failed()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop a background server; raises (see raise_if_failed) if it had crashed meanwhile."""
        if self._loop is not None and self._stop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop is closed: the server already ended (see raise_if_failed)
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.raise_if_failed()

    @property
    def url(self) -> str:
        self.raise_if_failed()
        return f"ws://{self.config.host}:{self.port}"


def check_port(host: str, port: int) -> None:
    """Raise SpecError, naming the fix, when (host, port) cannot be bound now."""
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SpecError(f"--host {host!r} is not an address of this machine: {e}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            raise SpecError(
                f"cannot listen on {host}:{port} ({e.strerror}): another process (another vla serve?) has it; "
                "pick another --port, or --port 0 for a free one"
            ) from None


def serve(
    checkpoint: str,
    config: ServerConfig = ServerConfig(),
    *,
    device: str | None = None,
    compile: bool = False,
    noise_scale: float | None = None,
) -> None:
    """Load a checkpoint and serve it until interrupted (`vla serve`). The port is checked first:
    a port in use is reported before seconds of loading. noise_scale overrides the checkpoint's."""
    from vla.runtime.policy import load_policy

    check_port(config.host, config.port)
    policy = load_policy(checkpoint, device=device, compile=compile, noise_scale=noise_scale)
    if policy.compiled:
        log.info("compiling the policy before serving (minutes the first time on this machine, then cached)")
        log.info("compiled in %.1f s", policy.warmup())
    PolicyServer(policy, config).serve_forever()
