"""FSDP2 (`torch.distributed.fsdp.fully_shard`) for `vla train --fsdp` under torchrun, and HSDP
(`--fsdp --hsdp`): sharded within each node, replicated across nodes.

Modes (`fsdp_mode`): "full" shards every parameter over all processes (a 1-D DeviceMesh); "hybrid"
uses a 2-D mesh (replicate = nodes, shard = processes per node: torchrun's WORLD_SIZE /
LOCAL_WORLD_SIZE), so the all-gathers and reduce-scatters of every step stay inside a node and
only one all-reduce of the sharded gradients per step crosses nodes (FSDP2 given a 2-D mesh).

Units, one all-gather / reduce-scatter each:
    every decoder layer of every stack (the VLM's and the expert's), as two units: its attention
    inputs [input_layernorm, q_proj, k_proj, v_proj (, q_norm, k_norm)] and the rest
    [o_proj, post_attention_layernorm, mlp] (the MLP is most of a layer's weights)
    every vision encoder layer
    the root: everything else (token embedding, patch embedding, projector, heads, time MLP,
    final norms), gathered at the start of the step and kept until its end
vla runs the decoder layers itself (vla.model.layers.attention calls `q_proj`, `mlp`, the norms ...,
never a layer's own forward), so a unit is the list of the modules that are called:
`fully_shard([...])` gathers on the first call and frees after the last. FSDP re-gathers a
grouped unit for the backward when the gradient of the *last-called* module's output arrives,
so each unit must end in a module whose output is used whenever any of the unit's are: the
value projection (keys and values are used together; pi0's last VLM layer is used only through
its keys and values, so a whole-layer unit ending in the MLP would never be re-gathered), and
the MLP (its output and o_proj's reach the loss together, or neither does).

Precision: on CUDA (with `bf16`) parameters are gathered and computed in bfloat16, gradients
reduced in float32 and the sharded master weights and optimizer states stay float32; on the
CPU everything is float32.

Equal to one process: each rank takes its rows of the global batch of a step (the trainer's
StepBatches) and FSDP averages the gradients. A parameter no row of the global batch used (the
head of a robot absent from this step) gets no gradient in one process, so AdamW skips it;
under FSDP every rank reduces a zero gradient for it (the collectives must match). So the
trainer applies one rule in every mode (`drop_unused_grads`): a gradient that is exactly zero
(on every rank) becomes none, and AdamW neither moves nor decays that parameter in that step.
That also covers parameters in the graph whose output is unused (pi0's last VLM query and MLP
weights: only the last layer's keys and values reach the loss).

Checkpoints hold full (unsharded) weights, optimizer state keyed by parameter name, and EMA,
gathered to rank 0: one process loads them (serving, or a resume without FSDP), and a resume
may run on another number of processes or nodes, in any mode (each rank takes its slice of the
same global batch, so the continuation is the same).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from vla.spec import SpecError

LAUNCH_HINT = "torchrun --nproc_per_node N $(which vla) train PRESET --fsdp ..."
FULL, HYBRID = "full", "hybrid"


def fsdp_mode(fsdp: bool | str | None) -> str | None:
    """train()'s `fsdp` -> None (no sharding), "full" (True) or "hybrid"."""
    if fsdp in (None, False, ""):
        return None
    if fsdp is True or fsdp == FULL:
        return FULL
    if fsdp == HYBRID:
        return HYBRID
    raise SpecError(f"fsdp must be True/'{FULL}' (shard over every process) or '{HYBRID}' (HSDP), got {fsdp!r}")


def hybrid_shape(world: int, local_world: int) -> tuple[int, int]:
    """HSDP's mesh: (replicas, shards) = (nodes, processes per node)."""
    if local_world < 1 or world % local_world:
        raise SpecError(
            f"HSDP needs the same number of processes on every node: {world} processes, {local_world} on this node"
        )
    return world // local_world, local_world


def device_mesh(device: torch.device, mode: str):
    """The DeviceMesh FSDP2 shards over: 1-D over every process ("full"), or (replicate, shard)
    = (nodes, processes per node) ("hybrid")."""
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size()
    if mode == HYBRID:
        shape = hybrid_shape(world, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        return init_device_mesh(device.type, shape, mesh_dim_names=("replicate", "shard"))
    return init_device_mesh(device.type, (world,))


def require_torchrun() -> None:
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        raise SpecError(
            f"--fsdp shards the model over processes started by torchrun; launch as: {LAUNCH_HINT} "
            "(one process per GPU; gloo on the CPU)"
        )


def decoder_units(layer: nn.Module) -> list[list[nn.Module]]:
    """A decoder layer's two FSDP units (see the module docstring): [norms, q/k/v projections] and
    [output projection, post-attention norm, MLP]; modules without parameters are left out.
    Asserts that the units cover every parameter of the layer. vla.train.memory sizes the
    gathered units from the same split."""
    attn = layer.self_attn
    norms = [m for m in (getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)) if m is not None]
    units = [
        [layer.input_layernorm, *norms, attn.q_proj, attn.k_proj, attn.v_proj],
        [attn.o_proj, layer.post_attention_layernorm, layer.mlp],
    ]
    covered = {id(p) for u in units for m in u for p in m.parameters()}
    left = [n for n, p in layer.named_parameters() if id(p) not in covered]
    assert not left, f"a decoder layer has parameters outside the modules vla calls: {left}"
    return [[m for m in u if any(True for _ in m.parameters())] for u in units]


def vision_layers(model: nn.Module) -> list[nn.Module]:
    """The vision tower's transformer layers (each one FSDP unit), found as the entries of any
    `layers` / `blocks` ModuleList inside `model.backbone.vision_tower`; [] without a tower."""
    tower = getattr(getattr(model, "backbone", None), "vision_tower", None)
    if tower is None:
        return []
    return [
        layer
        for m in tower.modules()
        for name in ("layers", "blocks")
        if isinstance(getattr(m, name, None), nn.ModuleList)
        for layer in getattr(m, name)
    ]


def shard(model: nn.Module, device: torch.device, *, bf16: bool, mode: str = FULL) -> nn.Module:
    """Apply FSDP2 in place (bottom-up: layers, then the root) over `device_mesh(device, mode)`.
    Returns the model."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = device_mesh(device, mode)
    mp = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if device.type == "cuda" and bf16
        else MixedPrecisionPolicy()
    )
    for stack in model.decoder_stacks():
        for layer in stack.layers:
            for unit in decoder_units(layer):
                fully_shard(unit, mesh=mesh, mp_policy=mp)
    for layer in vision_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    model.set_reduce_scatter_unused_params(True)
    return model


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def drop_unused_grads(params: list[nn.Parameter], sharded: bool) -> None:
    """A gradient that is exactly zero (on every rank, when `sharded`) becomes None (see the
    module docstring)."""
    ps = [p for p in params if p.grad is not None]
    if not ps:
        return
    used = torch.stack([_local(p.grad).ne(0).any() for p in ps]).float()
    if sharded:
        dist.all_reduce(used, op=dist.ReduceOp.MAX)
    for p, u in zip(ps, used.tolist()):
        if not u:
            p.grad = None


def full_tensors(state: dict[str, torch.Tensor], keep: bool) -> dict[str, torch.Tensor]:
    """Gather sharded tensors one at a time (a collective: every rank calls it); the ranks with
    `keep` get them on the CPU, the others an empty dict."""
    out = {}
    for k, v in state.items():
        full = v.full_tensor() if isinstance(v, DTensor) else v
        if keep:
            out[k] = full.detach().cpu()
    return out


def shard_like(full: dict[str, torch.Tensor], like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full tensors -> each placed as the tensor of the same name in `like` (sharded or not)."""
    out = {}
    for k, v in full.items():
        ref = like[k]
        v = v.reshape(ref.shape)  # a state saved when the parameter had another shape of its size (0-dim -> [1])
        if isinstance(ref, DTensor):
            out[k] = distribute_tensor(v.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
        else:
            out[k] = v.to(ref.device, ref.dtype)
    return out


def optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, distributed: bool) -> dict:
    """The optimizer state keyed by parameter name, unsharded (rank 0 holds it when distributed)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=distributed))


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Load a state from `optimizer_state` (any process count, sharded or not)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # Moments saved when a parameter had another shape of the same size (Keypoints.log_temperature
    # was 0-dim; FSDP needs [1]) take the parameter's shape; `step` stays a 0-dim counter.
    shapes = {n: p.shape for n, p in model.named_parameters()}
    for name, moments in state.get("state", {}).items():
        for k, v in moments.items():
            if k != "step" and name in shapes and torch.is_tensor(v) and v.shape != shapes[name]:
                moments[k] = v.reshape(shapes[name])
    # strict=False: a parameter that never had a gradient (the VLM's last MLP in pi0: the prefix
    # output is unused) has no state, in one process as under FSDP.
    set_optimizer_state_dict(model, opt, state, options=StateDictOptions(full_state_dict=True, strict=False))


def grad_norm(norm: torch.Tensor) -> float:
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
