"""The train rule's job: simulator and estimator from the rule's files, training on one rank or many, and
the model files, card, history and loss curve it leaves.

On one rank the job trains in the rule's own process. With ``train.gpus`` >
1 on CUDA, ``train.processes`` > 1 on the CPU, or ``train.nodes`` > 1, it
writes the job as JSON next to the checkpoint and starts the ranks with
torchrun (``cryoflow.sbi.distributed``), each running ``python -m
cryoflow.sbi.trainjob JOB.json``; rank 0 writes every output, atomically, after
the last step, so a run whose rank died leaves no model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import cryoflow
from cryoflow.errors import InputError
from cryoflow.io.fileio import sha256_files, write_json, write_tsv
from cryoflow.job import Job
from cryoflow.logs import configure, package_versions
from cryoflow.report.figures import plot_loss
from cryoflow.sbi import devices, distributed, models, training
from cryoflow.sbi.distributed import World
from cryoflow.workflow import from_config
from cryoflow.workflow.modelcard import ModelCard, with_added

log = logging.getLogger("cryoflow.sbi.trainjob")  # also when run as __main__ by torchrun

# the code that makes the training images and the loss: a checkpoint from other code is not resumed
# the modules whose code makes a checkpoint (paths within the package)
TRAINING_CODE = (
    "physics/simulator.py",
    "physics/projection.py",
    "physics/ctf.py",
    "physics/junk.py",
    "sbi/models.py",
    "sbi/training.py",
    "sbi/distributed.py",
)


@dataclasses.dataclass
class TrainJob:
    """The train rule's inputs, outputs and params as plain values (what travels to every rank as JSON)."""

    inputs: dict  # ensemble, priors and, where the config has them, maps and noise
    outputs: dict  # model, last_model, card, history, curve
    params: dict  # image, simulator, seed, train, model_name, recipe, card_config, checkpoint
    threads: int
    log: str | None = None

    @classmethod
    def from_job(cls, job: Job) -> TrainJob:
        """The rule's :class:`~cryoflow.job.Job` as the JSON-ready values every rank reads."""
        return cls(job.input.as_dict(), job.output.as_dict(), job.params.as_dict(), job.threads, job.log)

    @property
    def train(self) -> dict:
        """The train section, with the keys the rule's params leave out at their old value put back."""
        return with_added(self.params["train"])


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the ranks run: ``nodes`` × ``per_node`` ranks on ``device``'s kind."""

    device: torch.device
    nodes: int = 1
    per_node: int = 1

    @property
    def size(self) -> int:
        return self.nodes * self.per_node


def layout(train_cfg: dict, device: torch.device | None = None, visible_gpus: int | None = None) -> Layout:
    """The ranks a ``train`` section asks for: ``gpus`` per node on CUDA (one rank each), ``processes`` per
    node on the CPU, times ``nodes``. More GPUs than the job sees is an error naming ``train.gpus``.
    ``device`` and ``visible_gpus`` default to what this process finds (``train.device``, CUDA's count)."""
    device = device or devices.select_device(train_cfg["device"])
    nodes = int(train_cfg["nodes"])
    if device.type == "cuda":
        visible = torch.cuda.device_count() if visible_gpus is None else visible_gpus
        per_node = max(1, int(train_cfg["gpus"]))
        if per_node > visible:
            raise InputError(
                f"train.gpus is {per_node} but the training job sees {visible} GPU(s); "
                "ask the cluster for as many (the slurm profile passes train.gpus on) or lower it"
            )
    else:
        per_node = int(train_cfg["processes"])
    return Layout(device, nodes, per_node)


def training_code_sha256() -> str:
    package = Path(models.__file__).parents[1]
    return sha256_files([package / name for name in TRAINING_CODE])


def fingerprint(job: TrainJob, priors: dict, ensemble_sha256: str, input_sha256: dict) -> str:
    """What a checkpoint must share with this job to be resumed: config, seed, priors, inputs and the code."""
    params = job.params
    run_config = {
        "seed": params["seed"],
        "image": params["image"],
        "simulator": params["simulator"],
        "train": params["train"],
    }
    payload = [run_config, priors, ensemble_sha256, input_sha256, training_code_sha256()]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def execute(job: TrainJob, world: World, device: torch.device) -> None:
    """Train on this rank (every rank calls it); rank 0 writes the outputs."""
    device = distributed.rank_device(world, device)
    distributed.start(world, device)
    try:
        _train_and_write(job, world, device)
    finally:
        distributed.stop()


def model_card(
    job: TrainJob,
    model: models.PosteriorEstimator,
    history: list[dict],
    priors: dict,
    checksums: dict[str, str],
    world: World,
    device: torch.device,
) -> ModelCard:
    """The card of a finished training (all but its template θ, wall time and weights checksum)."""
    params = job.params
    best = min(history, key=lambda row: row["val_loss"])
    name = devices.device_name(device)
    return ModelCard(
        model="cryoflow neural posterior estimator: ResNet-18 embedding + neural spline flow (lampe NPE, zuko NSF)",
        cryoflow_version=cryoflow.__version__,
        architecture=model.architecture,
        parameters=models.count_parameters(model),
        name=params["model_name"],
        seed=params["seed"],
        config={**params["card_config"], "train": job.train},
        template_recipe=params["recipe"],
        priors=priors,
        checksums_sha256={**checksums, "training_code": training_code_sha256()},
        packages=package_versions(["torch", "zuko", "lampe", "numpy", "mrcfile", "starfile"]),
        python=platform.python_version(),
        device=name if world.size == 1 else f"{world.size} ranks of {name}",
        world_size=world.size,
        steps_run=history[-1]["step"],
        steps_planned=job.train["steps"],
        best_step=best["step"],
        best_val_loss=best["val_loss"],
        final_train_loss=history[-1]["train_loss"],
        final_val_loss=history[-1]["val_loss"],
        uniform_prior_loss=models.uniform_prior_loss(model.architecture["theta_range_A"]),
        sim_images_per_s=history[-1]["sim_images_per_s"],
        steps_per_s=history[-1]["steps_per_s"],
    )


def _train_and_write(job: TrainJob, world: World, device: torch.device) -> None:
    params, inputs = job.params, SimpleNamespace(**job.inputs)
    config = {"image": params["image"], "simulator": params["simulator"]}
    ensemble = from_config.load_ensemble(inputs.ensemble)
    simulator = from_config.load_simulator(inputs, config, device=device)
    priors = dataclasses.asdict(simulator.priors)  # as read from priors.json by load_simulator
    model = from_config.build_model(ensemble, job.train, simulator.priors)
    if world.main:
        log.info("estimator: %d parameters", models.count_parameters(model))
    ensemble_sha256 = sha256_files(inputs.ensemble)
    input_sha256 = {key: sha256_files(job.inputs[key]) for key in ("maps", "noise") if key in job.inputs}
    started = time.time()
    model, history, last_state = training.train(
        model,
        simulator,
        from_config.training_config(job.train, params["seed"]),
        checkpoint=params["checkpoint"],
        fingerprint=fingerprint(job, priors, ensemble_sha256, input_sha256),
        world=world,
    )
    if not world.main:
        return
    card = model_card(job, model, history, priors, {"ensemble": ensemble_sha256, **input_sha256}, world, device)
    card["template_theta_A"] = np.asarray(ensemble["theta_A"], dtype=float).tolist()
    card["wall_time_s"] = round(time.time() - started, 1)
    outputs = job.outputs
    models.save_model(outputs["model"], model, card)
    model.load_state_dict(last_state)
    models.save_model(outputs["last_model"], model, {**card, "weights": "last step"})
    # the card names its weights: a model file beside another model's card is refused at -n and at load
    write_json(outputs["card"], {**card, "weights_sha256": sha256_files(outputs["model"])})
    write_tsv(outputs["history"], history)
    plot_loss(history, card["uniform_prior_loss"], outputs["curve"])
    log.info("model card: %s", outputs["card"])


def run(job: TrainJob) -> None:
    """The rule's entry: train here on one rank, else start the ranks and wait for them."""
    ranks = layout(job.train)
    if ranks.size == 1:
        torch.set_num_threads(job.threads)
        execute(job, distributed.SINGLE, ranks.device)
        return
    log.info("starting %d ranks (%d node(s) × %d) on %s", ranks.size, ranks.nodes, ranks.per_node, ranks.device.type)
    staged = staged_job(job)
    spec = Path(job.params["checkpoint"]).with_name("train_job.json")
    write_json(spec, dataclasses.asdict(staged))
    try:
        distributed.run_ranks(distributed.launch_command(["-m", __name__, str(spec)], ranks.per_node, ranks.nodes))
        publish(staged.outputs, job.outputs)
    finally:
        spec.unlink(missing_ok=True)
        shutil.rmtree(staging_dir(job), ignore_errors=True)


def staging_dir(job: TrainJob) -> Path:
    return Path(job.params["checkpoint"]).with_name("staged")


def staged_job(job: TrainJob) -> TrainJob:
    """The job the ranks run: its outputs in a staging folder beside the checkpoint, which only the rule's
    own process publishes, once every rank has finished (``publish``). A training whose rule process died
    (and whose ranks, if any outlived it, finished later) never leaves a model where a rerun would trust it."""
    folder = staging_dir(job)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    outputs = {key: str(folder / f"{key}{Path(path).suffix}") for key, path in job.outputs.items()}
    return dataclasses.replace(job, outputs=outputs)


def publish(staged: dict, outputs: dict) -> None:
    """Move the staged outputs onto the rule's outputs (renames within one file system); a missing one is a
    rank's failure to write it."""
    missing = [key for key, path in staged.items() if not Path(path).is_file()]
    if missing:
        raise RuntimeError(f"the ranks finished without writing {', '.join(missing)}")
    for key, path in staged.items():
        Path(outputs[key]).parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, outputs[key])


def rank_main(spec_path: str) -> None:
    """One rank, as torchrun starts it: the job from JSON, this rank's threads and log."""
    job = TrainJob(**json.loads(Path(spec_path).read_text()))
    world = World.from_env()
    configure(job.log, level=logging.INFO if world.main else logging.WARNING, append=True, label=f"rank {world.rank}")
    ranks = layout(job.train)
    # the job's cores shared by this node's ranks (CPU processes, or one rank per GPU)
    torch.set_num_threads(max(1, job.threads // ranks.per_node))
    if ranks.size != world.size:
        raise RuntimeError(f"started as {world.size} ranks, but the job asks for {ranks.size}")
    execute(job, world, ranks.device)


if __name__ == "__main__":
    rank_main(sys.argv[1])
