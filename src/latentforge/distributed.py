"""Training on several processes with PyTorch's own engine (``torchrun``): one process per CPU group or GPU,
gloo on CPU and NCCL on CUDA.

Every process holds the whole model and the whole data set in memory; each global mini-batch is split
between them (process r takes rows r, r+N, r+2N, … of it), and gradients are averaged across processes
just before each optimiser step, by a pre-step hook on the optimiser. Because the hook sits on the
optimiser and not on the model's forward, it serves every model's own ``training_step`` alike (a GAN's
two optimisers included). Checkpoints, logs and the run's files are written by rank 0 only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init() -> World:
    """Join the process group torchrun set up (gloo on CPU, NCCL when CUDA is visible); idempotent."""
    if launched() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (e.g. a run directory named after the clock)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_model(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank, so all start from the same weights."""
    if not world().distributed:
        return
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients_before_step(optimizers: dict[str, torch.optim.Optimizer]) -> list:
    """Register on each optimiser a pre-step hook that averages its parameters' gradients across ranks
    (one flattened all-reduce per step). Returns the hook handles."""
    size = world().size
    handles = []
    for opt in optimizers.values():
        def hook(optimizer, args, kwargs) -> None:
            grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if not grads:
                return
            flat = torch._utils._flatten_dense_tensors(grads)
            dist.all_reduce(flat)
            flat.div_(size)
            for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
                g.copy_(synced)

        handles.append(opt.register_step_pre_hook(hook))
    return handles


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over ranks (the tensor itself on one process)."""
    if world().distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (itself on one process): for decisions every rank must take together,
    such as stopping, or the others would wait forever at the next collective."""
    if not world().distributed:
        return flag
    return bool(all_sum(torch.tensor([float(flag)])).item())
