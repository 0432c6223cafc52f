"""The ranks of a run under torchrun: who this process is, its device, its lanes, and the collectives the trainer needs.

A plain `charlstm-train` is rank 0 of 1 and every collective is a no-op; under torchrun
(WORLD_SIZE, RANK, LOCAL_RANK in the environment) the process group is gloo on CPUs and NCCL
on GPUs, each rank on cuda:LOCAL_RANK.
"""

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from charlstm.core.errors import BadInput


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that prepares the corpus cache, writes files and speaks."""
        return self.rank == 0

    def lanes(self, batch_size: int) -> range:
        """This rank's contiguous share of the global lanes."""
        if batch_size % self.world:
            raise BadInput(f"--batch-size {batch_size} lanes cannot be split evenly over {self.world} processes;"
                           f" use a multiple of {self.world}")
        share = batch_size // self.world
        return range(self.rank * share, (self.rank + 1) * share)

    def share(self, count: int) -> slice:
        """This rank's contiguous part of `count` things that need not divide evenly (validation lanes)."""
        return slice(count * self.rank // self.world, count * (self.rank + 1) // self.world)

    def sum(self, *values: float) -> list[float]:
        """The sum of each value over the ranks (in float64), the same on every rank."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return t.tolist()

    def gather_lanes(self, x: torch.Tensor | None) -> torch.Tensor | None:
        """Every rank's (L, b, H) state joined along the lanes: (L, world * b, H) on every rank."""
        if self.world == 1 or x is None:
            return x
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=1)

    def gather_objects(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def quiet_unless_main() -> None:
    """Under torchrun, only rank 0 speaks: the others' stdout and stderr go nowhere, so that a
    message (a bad input every rank finds) is printed once."""
    if int(os.environ.get("RANK", "0")) != 0:
        devnull = open(os.devnull, "w")
        sys.stdout = sys.stderr = devnull


def _collective_device() -> torch.device:
    backend = dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def pick_device(device: str, ranks: Ranks) -> torch.device:
    if device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"--device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: torch sees no CUDA GPU here; use --device cpu or auto")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", ranks.local_rank if ranks.world > 1 else torch.cuda.current_device())


def from_environment(device: str = "auto") -> tuple[Ranks, torch.device]:
    """This process's rank and device; joins the process group when torchrun started it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Ranks(), pick_device(device, Ranks())
    ranks = Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    chosen = pick_device(device, ranks)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return ranks, chosen
