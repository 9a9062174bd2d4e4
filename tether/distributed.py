"""Data parallelism through torch.distributed, as launched by `torchrun` or `accelerate launch`.

One process per replica. Each process trains on its own shard of every global
batch; `DistributedDataParallel` all-reduces (averages) gradients; metrics are
averaged across processes before logging; only rank 0 writes files. Backend: gloo
on CPU, NCCL on CUDA. A plain `python`/`tether` run is world size 1 and none of
this does anything.

With `fsdp`, FSDP2 (`torch.distributed.fsdp.fully_shard`) replaces DDP: each
process holds 1/W of the weights, gradients and optimiser state; a block's weights
are gathered for its forward and backward only. The gradient math is the same.
"""

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from tether.models import resolve_device


@dataclass(frozen=True)
class Replica:
    """This process's place among the data-parallel replicas."""
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_replica(device: str = "auto") -> Replica:
    """Join the process group that torchrun/accelerate describe in the environment (RANK, WORLD_SIZE, ...)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Replica(0, 1, resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Replica(dist.get_rank(), world_size, resolved)


def local_slice(items: list, replica: Replica) -> list:
    """This replica's contiguous share of a global batch (sizes differ by at most one)."""
    n, w, r = len(items), replica.world_size, replica.rank
    return items[r * n // w:(r + 1) * n // w]


def share_weight(n_local: float, n_global: float, replica: Replica) -> float:
    """Scale for a local mean loss so that DDP's gradient average equals the global-batch mean's gradient.

    DDP averages gradients over W replicas: (1/W) Σ_r w_r ∇mean_r = Σ_r (n_r/N) ∇mean_r when w_r = W·n_r/N.
    """
    return replica.world_size * n_local / n_global


def wrap(model: torch.nn.Module, replica: Replica, fsdp: bool = False,
         replicated: tuple[torch.nn.Module, ...] = ()) -> torch.nn.Module:
    """DistributedDataParallel around `model` (or `shard(model, replicated)` with fsdp) when there are several
    replicas, else `model` itself. Build the optimiser after this: sharding replaces the parameters."""
    if not replica.distributed:
        return model
    if fsdp:
        return shard(model, replicated)
    device_ids = [replica.device.index] if replica.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def shard(module: torch.nn.Module, replicated: tuple[torch.nn.Module, ...] = ()) -> torch.nn.Module:
    """FSDP2: every transformer block (the classes a transformers model lists in `_no_split_modules`) is
    its own unit, then `module` itself, whose forward gathers the remaining weights (embeddings, heads).
    The submodules in `replicated` (frozen models: no gradients or optimiser state to shard) stay whole on
    every replica. A block reshards after its forward; the root keeps its weights until the backward, as
    fully_shard's defaults do (`unsharded` restores these settings). `module` is the root from the start."""
    from torch.distributed.fsdp import fully_shard
    kept = {id(m) for r in replicated for m in r.modules()}
    blocks = {name for m in module.modules() for name in (getattr(m, "_no_split_modules", None) or [])}
    for m in module.modules():
        if type(m).__name__ in blocks and m is not module and id(m) not in kept:
            fully_shard(m, reshard_after_forward=True)
    root = fully_shard(module, reshard_after_forward=False,
                       ignored_params={p for r in replicated for p in r.parameters()} or None)
    # FSDP2 makes the first unit to run a forward the root; code that calls a submodule first (sampling from
    # the policy inside an actor-critic) would make a block one. torch has no public call for this.
    root._get_fsdp_state()._lazy_init()
    return root


def is_sharded(module: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor
    return any(isinstance(p, DTensor) for p in module.parameters())


def full_value(tensor: torch.Tensor) -> float:
    """A scalar tensor's value; a DTensor (FSDP2's gradient norm) is gathered first, on every rank."""
    from torch.distributed.tensor import DTensor
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).item()


@contextlib.contextmanager
def gathered(root: torch.nn.Module):
    """The root's own weights gathered on every replica for code that does not call root.forward
    (blocks gather theirs in their forward); nothing without FSDP. Every replica must enter it."""
    from torch.distributed.fsdp import FSDPModule
    if not isinstance(root, FSDPModule):
        yield
        return
    root.unshard()
    try:
        yield
    finally:
        root.reshard()


@contextlib.contextmanager
def unsharded(root: torch.nn.Module):
    """Every FSDP unit of `root` (what `shard` returned) gathered once, for code that calls the model a
    data-dependent number of times (sampling stops when every row has ended, at another step on each
    replica) or reads its weights directly (`FastGPT2Decoder`). Inside, the weights are plain tensors
    and forwards do no collectives; the whole model is held on each replica, as generation needs it.
    Every replica must enter it; nothing without FSDP."""
    from torch.distributed.fsdp import FSDPModule
    units = [m for m in root.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(unit is not root, recurse=False)  # as `shard` set them


def full_state_dict(model: torch.nn.Module) -> dict | None:
    """The whole state dict on CPU on rank 0 (empty elsewhere) when `model` is sharded, else None.
    A collective: every replica calls it."""
    if not is_sharded(model):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return without_tied(state, model)


def without_tied(state: dict, model: torch.nn.Module) -> dict:
    """A tied parameter (lm_head = input embeddings) once, under its first name, as save_pretrained writes it
    and as torch's sharded state-dict loading expects it."""
    tied = {n for n, _ in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    return {k: v for k, v in state.items() if k not in tied}


def whole_copy(module: torch.nn.Module) -> dict:
    """A copy of the module's weights on every replica: whole tensors (on CPU) when it is sharded, a clone of
    its state dict otherwise. A collective under FSDP: every replica calls it."""
    if not is_sharded(module):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    from torch.distributed.tensor import DTensor
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().cpu().clone()
            for k, v in module.state_dict().items()}


def load_whole(module: torch.nn.Module, state: dict) -> None:
    """Load whole tensors (`whole_copy`'s, or a checkpoint's) into `module`, each replica keeping its shard."""
    if not is_sharded(module):
        module.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True))


def training_state(model: torch.nn.Module, optimizer) -> tuple[dict, dict]:
    """(model state, optimiser state) for a checkpoint: whole tensors on CPU on rank 0 (empty elsewhere)
    when `model` is sharded, the plain state dicts otherwise. A collective under FSDP."""
    if not is_sharded(model):
        return model.state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
    model_state, optimizer_state = get_state_dict(model, optimizer,
                                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return without_tied(model_state, model), optimizer_state


def load_training_state(model: torch.nn.Module, optimizer, model_state: dict, optimizer_state: dict) -> None:
    """Load `training_state`'s dicts (every replica reads the whole file; each keeps its shard). The model's
    missing keys (frozen parts a checkpoint leaves out) keep their values."""
    if not is_sharded(model):
        model.load_state_dict(model_state, strict=False)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True, strict=False))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def no_sync(model: torch.nn.Module, active: bool):
    """Skip the gradient all-reduce (for all but the last micro-batch of a gradient-accumulation step)."""
    if active and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def mean_across(metrics: dict, replica: Replica) -> dict:
    """Average numeric metrics over replicas (one all-reduce); others are taken from this replica."""
    if not replica.distributed:
        return metrics
    keys = [k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64,
                          device=replica.device if replica.device.type == "cuda" else "cpu")
    dist.all_reduce(values)
    return {**metrics, **dict(zip(keys, (values / replica.world_size).tolist()))}


def sum_across(value: float, replica: Replica) -> float:
    """Σ over replicas of a number (e.g. response tokens in a global minibatch)."""
    if not replica.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=replica.device if replica.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.item()


def gather_objects(obj, replica: Replica) -> list:
    """Every replica's `obj`, in rank order (for per-rank RNG states in checkpoints)."""
    if not replica.distributed:
        return [obj]
    out = [None] * replica.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(replica: Replica) -> None:
    if replica.distributed and dist.is_initialized():
        dist.destroy_process_group()


def exit_replica(code: int) -> NoReturn:
    """End a replica's process with `code` once its run is over, skipping the interpreter's finalisation.

    FSDP2's DTensor caches keep the gloo process group alive after `destroy_process_group`, and with it
    the group's worker threads. One that takes the GIL while the interpreter finalises aborts the process
    ("terminate called without an active exception"), so a run that wrote all its files would exit -6.
    Every file is closed by then; only the standard streams need a flush."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


SINGLE = Replica(0, 1, torch.device("cpu"))  # a plain one-process run (only rank and world size are read)
