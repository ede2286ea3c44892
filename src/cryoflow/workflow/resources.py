"""What a rule asks a cluster for, from the config (standard library only: the Snakefile calls it).

SLURM's executor turns a ``gpu`` resource into ``--gpus=N``, the job's total over all its nodes, while a
multi-node training starts ``train.gpus`` ranks on every node; ``gres`` (``--gres=gpu:N``) is per node.
"""

from __future__ import annotations

# minutes a train job needs beyond train.max_hours: set-up, the last validation, the model files and report
TRAIN_RUNTIME_MARGIN_MIN = 60
# a training without a wall-time budget is given a day
TRAIN_RUNTIME_DEFAULT_MIN = 24 * 60
# OpenMM platforms that run on a GPU (auto takes CUDA where a GPU is there)
MD_GPU_PLATFORMS = ("auto", "CUDA", "OpenCL")


def gpus_per_node(device: str, gpus: int) -> str:
    """The per-node GPU request (``gres``) of a job whose device key is ``device``: ``gpu:N``, or nothing
    (an empty string) for a job that runs on the CPU."""
    return f"gpu:{gpus}" if device != "cpu" and gpus > 0 else ""


def train_runtime_min(max_hours: float | None) -> int:
    """The train job's wall time (minutes): ``train.max_hours`` counts inside the training loop only, so the
    job gets it plus a margin that covers set-up, validation and the save (else the scheduler could kill it
    before the model is written)."""
    if not max_hours:
        return TRAIN_RUNTIME_DEFAULT_MIN
    return int(round(60 * max_hours)) + TRAIN_RUNTIME_MARGIN_MIN


def md_gpus(platform: str) -> str:
    """One GPU for an OpenMM run on a GPU platform (never ``train.gpus``: one simulation uses one GPU)."""
    return "gpu:1" if platform in MD_GPU_PLATFORMS else ""


def job_gpus(device: str, gpus: int = 1) -> int:
    """GPUs of a single-process job (``--gpus``): none where its device key runs it on the CPU (more than one
    is refused at -n, ``configuration.check_single_gpu_jobs``)."""
    return 0 if device == "cpu" else gpus


def gpu_if_cuda(device: str) -> int:
    """One GPU for a rule whose device key says ``cuda`` outright (it would fail on a CPU node); ``auto``
    asks for none and takes what the node has (on a cluster's CPU partition: the CPU)."""
    return 1 if device.startswith("cuda") else 0
