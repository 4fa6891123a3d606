"""The process group of one gang of ranks: who this rank is, its device, and collectives."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """This rank's place in the gang and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    backend: str

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank of the gang reaches this point."""
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over all ranks, in one collective."""
        # float64 so that sums of losses over many ranks keep their digits.
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return [float(value) for value in tensor.tolist()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_threads_per_rank(local_world_size: int) -> int:
    """CPU cores this process may use, shared evenly by the ranks of this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // local_world_size)


def init_distributed() -> DistContext:
    """Join the gang torchrun started (``env://``), on CUDA with NCCL or on the CPU with gloo.

    A rank started by hand, without torchrun's variables, runs as a gang of one, so the same
    entry point serves debugging and single-device jobs.
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
        dist.init_process_group(backend, init_method="env://", device_id=device)
    else:
        device = torch.device("cpu")
        backend = "gloo"
        # Ranks on one node share its cores; more threads than cores makes every rank slower.
        torch.set_num_threads(cpu_threads_per_rank(local_world_size))
        dist.init_process_group(backend, init_method="env://")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank,
                       local_world_size=local_world_size, device=device, backend=backend)


def shutdown_distributed() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
