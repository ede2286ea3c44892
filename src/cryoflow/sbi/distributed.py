"""Data-parallel training across processes, GPUs and nodes with torch.distributed.

A world of N ranks trains one model with DistributedDataParallel: each rank
simulates its share of every batch from its own seeded generator
(:func:`rank_seed`), gradients are averaged across ranks by DDP, and batch
norm uses the statistics of the whole global batch (synchronized across
ranks), so one step on N ranks is the step one rank takes with the whole
batch. CUDA ranks use NCCL and one GPU each; CPU ranks use gloo.

Ranks are started by torchrun (``python -m torch.distributed.run``): on one
node with ``--standalone`` (it finds a free port itself), on several nodes
of a SLURM allocation by ``srun``, one torchrun per node, meeting at the
allocation's first node (:func:`launch_command`).
"""

from __future__ import annotations

import collections
import ctypes
import datetime
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

# torchrun's default rendezvous port, offset by the SLURM job id so that two jobs on one node do not meet
RDZV_PORT_BASE = 29500


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one training run."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 validates, checkpoints and writes the model."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes in RANK, WORLD_SIZE and LOCAL_RANK (one rank where they are unset)."""
        env = os.environ
        return cls(int(env.get("WORLD_SIZE", 1)), int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)))


SINGLE = World()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s simulation stream: rank 0 keeps ``seed`` (a one-rank run is the run it
    always was); the others get independent streams derived from (seed, rank)."""
    if rank == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def rank_device(world: World, device: torch.device) -> torch.device:
    """One GPU per rank on its node (``cuda:<local rank>``); CPU ranks share the CPU."""
    if device.type == "cuda" and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


def start(world: World, device: torch.device, timeout_s: float = 600.0) -> None:
    """Join the process group (MASTER_ADDR/MASTER_PORT from torchrun): NCCL on CUDA, gloo on the CPU.

    A rank that waits longer than ``timeout_s`` for the others in a collective raises instead of hanging."""
    if world.size == 1 or dist.is_initialized():
        return
    die_with_parent()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=world.rank,
        world_size=world.size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def die_with_parent(parent: int | None = None) -> None:
    """Let the kernel kill this process when its parent dies (Linux). Each rank calls it (torchrun starts
    ranks in sessions of their own, so a job killed by its process group would leave them running), and
    the launcher runs it between fork and exec (``run_ranks``), so that torchrun dies with the train rule's
    own process however that ends (an OOM killer's or a node drain's SIGKILL included). ``parent``: the pid
    that must still be the parent after the call (default: this process's parent before it)."""
    if not sys.platform.startswith("linux"):
        return
    expected = os.getppid() if parent is None else parent
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != expected or expected == 1:  # the parent died before the call
        os._exit(1)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _SumOverRanks(torch.autograd.Function):
    """all-reduce (sum) whose gradient is the all-reduced gradient: d(Σ_r L_r)/dx on every rank."""

    @staticmethod
    def forward(ctx, x):
        total = x.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Σ over ranks, differentiable; x itself on one rank."""
    return _SumOverRanks.apply(x) if active() else x


class SyncedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the global batch of all ranks (for gloo: torch's SyncBatchNorm is GPU-only).

    The same parameters and buffers as ``nn.BatchNorm2d``, so model files do not change; outside a
    multi-rank training step it is plain batch norm. Each channel's count, sum and sum of squares are
    summed over ranks in one all-reduce (in float64, so that the variance E[x²] − E[x]² keeps its digits);
    the gradient flows back through the same sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = (0, 2, 3)
        count = x.new_full((1,), x.numel() / x.shape[1])
        local = torch.cat([count, x.sum(dims), (x * x).sum(dims)]).double()
        sums = sum_over_ranks(local)
        n, channels = sums[0], x.shape[1]
        mean = sums[1 : 1 + channels] / n
        var = sums[1 + channels :] / n - mean * mean
        if self.track_running_stats:
            assert self.num_batches_tracked is not None and self.running_mean is not None
            assert self.running_var is not None
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(x.dtype), factor)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(x.dtype), factor)
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        shift = -mean.to(x.dtype) * scale
        if self.affine:
            scale, shift = scale * self.weight, shift * self.weight + self.bias
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def synchronize_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` with its BatchNorm2d layers synchronized across ranks: torch's SyncBatchNorm on CUDA,
    :class:`SyncedBatchNorm2d` on the CPU. Call before the optimizer is built (CPU layers are new modules
    with the old layers' values)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced.to(device))
        else:
            synchronize_batch_norm(child, device)
    return module


def gather(value) -> list:
    """``value`` of every rank, in rank order (a one-element list on one rank)."""
    if not active():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (a stop that all ranks take together)."""
    if not active():
        return flag
    tensor = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def mean_over_ranks(values: list[float]) -> list[float]:
    """The mean over ranks of each value (the values themselves on one rank)."""
    if not active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return (tensor / dist.get_world_size()).tolist()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- starting the ranks ------------------------------------------------------------------------------------


def slurm_first_node(nodelist: str) -> str:
    """The first host of a SLURM node list (``scontrol show hostnames``)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def launch_command(program: list[str], ranks_per_node: int, nodes: int = 1, env=None) -> list[str]:
    """The command that starts ``nodes`` × ``ranks_per_node`` ranks of ``python *program`` (``program``:
    ``["-m", module, *args]`` or ``[script, *args]``).

    One node: torchrun ``--standalone``. Several: ``srun`` starts one torchrun per node of the SLURM
    allocation, meeting at its first node (MASTER_ADDR, else the first host of SLURM_JOB_NODELIST) on
    MASTER_PORT, else 29500 plus the job id modulo 1000."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks_per_node}"]
    if nodes == 1:
        return [*torchrun, "--standalone", *program]
    env = os.environ if env is None else env
    if "SLURM_JOB_ID" not in env:
        raise RuntimeError(
            f"train.nodes is {nodes}: training on several nodes runs inside a SLURM allocation "
            "(the slurm profile), and SLURM_JOB_ID is not set"
        )
    job = env["SLURM_JOB_ID"]
    host = env.get("MASTER_ADDR") or slurm_first_node(env["SLURM_JOB_NODELIST"])
    port = env.get("MASTER_PORT") or str(RDZV_PORT_BASE + int(job) % 1000)
    return [
        "srun",
        "--overlap",  # inside the job step Snakemake's SLURM executor runs the train job in
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        *torchrun,
        f"--nnodes={nodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={host}:{port}",
        f"--rdzv-id={job}",
        *program,
    ]


class RankFailed(RuntimeError):
    """A rank of a multi-rank run died; the others were stopped."""


# what a rank raises when another rank died under it: a consequence, not the cause
LOST_PEER = re.compile(r"Connection reset|Connection closed|connection refused|Broken pipe|timed out|NCCL error", re.I)


def failed_rank(output: str) -> tuple[str, str] | None:
    """The rank that failed first for its own reason, and its last error line, from torchrun's output
    (each rank's lines prefixed ``[rankN]:``): ranks whose error is a lost connection to a dead peer come
    last; among the rest, the first failure torchrun lists."""
    errors = {}
    for rank, line in re.findall(r"^\[rank(\d+)\]:\s*(\w*(?:Error|Exception)\b.*)$", output, flags=re.M):
        errors[rank] = line.strip()
    listed = re.findall(r"^\s*rank\s*:\s*(\d+)", output, flags=re.M)
    ranks = list(dict.fromkeys([*listed, *errors]))
    if not ranks:
        return None
    ranks.sort(key=lambda r: bool(LOST_PEER.search(errors.get(r, ""))))
    return ranks[0], errors.get(ranks[0], "")


def run_ranks(command: list[str], env: dict | None = None) -> None:
    """Run a launch command, its output passed on to stderr as it comes. A failure raises RankFailed naming
    the rank (torchrun stops the other ranks when one dies; each rank's error is in its log)."""
    tail: collections.deque[str] = collections.deque(maxlen=400)
    launcher = os.getpid()
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=lambda: die_with_parent(launcher),  # torchrun (srun) dies with this process
    ) as proc:
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line)
    if proc.returncode != 0:
        raise RankFailed(failure_message("".join(tail), proc.returncode))


def failure_message(output: str, returncode: int) -> str:
    """What went wrong, from torchrun's output: the rank that failed first and its error, or, where no rank
    failed for a reason of its own, the signal that killed it (torchrun's own exit code says only that a rank
    failed)."""
    found = failed_rank(output)
    signalled = re.search(r"Signal (\d+) \((SIG[A-Z]+)\) received by PID", output)
    # torchrun sends SIGTERM to the ranks still running once one has failed: a rank's own error is the cause
    own_error = found is not None and bool(found[1]) and not LOST_PEER.search(found[1])
    if signalled and not own_error:
        who = f"rank {found[0]}" if found else "a rank"
        what = (
            f"{who} of the training run was killed by {signalled.group(2)} (signal {signalled.group(1)}): "
            "the kernel's out-of-memory killer or the scheduler, as a rule"
        )
    else:
        who = f"rank {found[0]}" + (f" ({found[1]})" if found[1] else "") if found else "a rank"
        what = f"{who} of the training run failed (torchrun exit code {returncode})"
    return what + "; the other ranks were stopped and no model was written"
