"""Loading a model's weights with one copy in memory, however large the model.

The plain way (build the model, which allocates and randomly initialises every parameter, then
`load_state_dict` from a dict read from the file) holds two full copies at its peak: 1.7x the
file for a 14 GB pi0 (and safetensors' `load_file` maps the file, so the pages it copies from
stay resident beside the model's). Here instead:

    params_on_meta()   the model is built with its parameters on the meta device (no memory,
                       no initialisation); buffers are made as usual, since the non-persistent
                       ones (RoPE frequencies, position ids) are in no file
    read_safetensors() every tensor is read from the file straight into its own fresh memory,
                       one at a time, with plain reads: no mapping stays behind, so the tensors
                       are ordinary private memory and the file may change afterwards
    assign_weights()   the tensors become the parameters (`load_state_dict(assign=True)`),
                       cast to the dtype the model was built in where they differ

Peak: the file's bytes plus the process's own baseline (vla.bench.load measures it).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

# safetensors' dtype names (format spec) -> torch
DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
    "BOOL": torch.bool,
}

_lock = threading.Lock()
_meta_threads: set[int] = set()
_original_register = nn.Module.register_parameter


def _register_on_meta(module: nn.Module, name: str, param) -> None:
    if param is not None and threading.get_ident() in _meta_threads and param.device.type != "meta":
        param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
    _original_register(module, name, param)


@contextmanager
def params_on_meta():
    """Modules built inside (by this thread) get their parameters on the meta device; buffers
    are real. Initialisers then run on meta tensors, so building costs neither memory nor time."""
    tid = threading.get_ident()
    with _lock:
        if not _meta_threads:
            nn.Module.register_parameter = _register_on_meta
        _meta_threads.add(tid)
    try:
        yield
    finally:
        with _lock:
            _meta_threads.discard(tid)
            if not _meta_threads:
                nn.Module.register_parameter = _original_register


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A .safetensors file -> {key: tensor}, each read into fresh memory (no mmap, no second copy).
    A malformed file raises ValueError (or OSError) naming what is wrong."""
    path = Path(path)
    size = path.stat().st_size
    out: dict[str, torch.Tensor] = {}
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file shorter than a safetensors header")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ValueError(f"header length {n} exceeds the file's {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"header is not JSON: {e}") from None
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        header.pop("__metadata__", None)
        base = 8 + n
        # File order: the reads run forward through the file.
        for key, info in sorted(header.items(), key=lambda kv: kv[1].get("data_offsets", [0])[0]):
            try:
                dtype, shape, (start, end) = (
                    DTYPES[info["dtype"]],
                    [int(s) for s in info["shape"]],
                    info["data_offsets"],
                )
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{key}: bad header entry {info!r} ({e!r})") from None
            t = torch.empty(shape, dtype=dtype)
            nbytes = t.numel() * t.element_size()
            if end - start != nbytes or start < 0 or base + end > size:
                raise ValueError(f"{key}: data offsets {[start, end]} do not fit {info['dtype']}{shape} in the file")
            if nbytes:
                f.seek(base + start)
                view = t.reshape(-1).view(torch.uint8).numpy()  # the tensor's own bytes
                if f.readinto(view) != nbytes:
                    raise ValueError(f"{key}: file ends inside the tensor")
            out[key] = t
    return out


def assign_weights(model: nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Make `weights` the model's parameters and persistent buffers, cast to the model's dtypes
    (as load_state_dict's copy casts) -> (missing keys, unexpected keys), as
    `load_state_dict(strict=False)`. `weights` is consumed: a cast entry is replaced in place, so
    the file's copy is freed as its cast is made. A size mismatch raises as load_state_dict does.
    Parameters built on meta and not in `weights` stay on meta: they are among the missing keys,
    which the caller must refuse."""
    own = model.state_dict()
    for k in list(weights):
        if k in own and weights[k].dtype != own[k].dtype:
            weights[k] = weights[k].to(own[k].dtype)
    result = model.load_state_dict(weights, strict=False, assign=True)
    return list(result.missing_keys), list(result.unexpected_keys)
