"""Paths of the model's and the datasets' artefacts, and the input functions that tie rules to them."""

import functools
from pathlib import Path

from cryoflow.io import starindex

MODEL = config["model"]["name"]
DATASETS = {
    name: configuration.dataset_settings(config, name) for name in config["datasets"]
}
# model artefacts, shared by every dataset inferred with the model
MODEL_DIR = f"results/{MODEL}"
MODEL_LOG = f"logs/{MODEL}"
MODEL_BENCH = f"benchmarks/{MODEL}"
# a model file of an earlier run that its card does not name (truncated, replaced): refused before any job
if not (workflow.remote_exec or workflow.subprocess_exec or config["model"]["trained"]):
    try:
        modelcard.check_own_model(f"{MODEL_DIR}/model")
    except ConfigError as err:
        raise WorkflowError(str(err))
# dataset artefacts, one folder per dataset under its model ({dataset} is a wildcard)
DATASET_DIR = f"{MODEL_DIR}/datasets/{{dataset}}"
DATASET_LOG = f"{MODEL_LOG}/datasets/{{dataset}}"
DATASET_BENCH = f"{MODEL_BENCH}/datasets/{{dataset}}"
# a demo dataset is written as a RELION project: its Extract job's STAR file and stack folder
DEMO_STAR = f"{DATASET_DIR}/demo/Extract/job007/particles.star"
DEMO_STACKS = f"{DATASET_DIR}/demo/Extract/job007/Movies"
# micrograph sets evaluated with the model ({mset} is a wildcard)
MICROGRAPH_SETS = {
    name: configuration.micrograph_settings(config, name)
    for name in config["micrographs"]
}
MSET_DIR = f"{MODEL_DIR}/micrographs/{{mset}}"
MSET_LOG = f"{MODEL_LOG}/micrographs/{{mset}}"
MSET_BENCH = f"{MODEL_BENCH}/micrographs/{{mset}}"
# a demo micrograph set is written as a RELION project: its CTF job's STAR file and micrograph folder
MSET_DEMO_STAR = f"{MSET_DIR}/demo/CtfFind/job003/micrographs_ctf.star"
MSET_DEMO_MICROGRAPHS = f"{MSET_DIR}/demo/MotionCorr/job002/Micrographs"
MSET_DEMO_TRUTH = f"{MSET_DIR}/demo/truth.tsv"
# a 2-D θ grid has n_templates per axis
N_TEMPLATES = config["templates"]["n_templates"] ** config["templates"]["theta_dims"]
TEMPLATE_IDS = [f"{i:03d}" for i in range(N_TEMPLATES)]
TEMPLATE_RECIPE = modelcard.template_recipe(config)


def all_cores(cluster_default=8):
    """Threads of rules that use a whole machine: --cores locally; on a cluster (no --cores) the
    default, which a profile's set-threads overrides."""
    try:
        return workflow.cores
    except WorkflowError:
        return cluster_default


# ----------------------------------------------------------------- the model
def model_file(wildcards=None):
    """The estimator datasets are inferred with: trained here, or the one model.trained names."""
    return config["model"]["trained"] or f"{MODEL_DIR}/model/posterior.pt"


def model_card(wildcards=None):
    trained = config["model"]["trained"]
    return (
        str(Path(trained).with_name("card.json"))
        if trained
        else f"{MODEL_DIR}/model/card.json"
    )


def likelihood_reference_input(wildcards=None):
    """The explicit-likelihood reference, where validation.likelihood asks for it."""
    if config["validation"]["likelihood"] is None:
        return {}
    return {"likelihood": f"{MODEL_DIR}/validation/likelihood.npz"}


def template_inputs(wildcards=None):
    """The reference; with templates.method: md, the prepared structure and its trajectory as well."""
    inputs = {"pdb": f"{MODEL_DIR}/structure/reference.pdb"}
    if config["templates"]["method"] == "md":
        inputs["prepared"] = f"{MODEL_DIR}/templates/md/prepared.pdb"
        inputs["trajectory"] = f"{MODEL_DIR}/templates/md/trajectory.dcd"
    return inputs


def simulator_inputs(wildcards=None):
    """Files the simulator is built from: ensemble, resolved priors, maps and noise spectrum when used."""
    inputs = {
        "ensemble": f"{MODEL_DIR}/templates/ensemble.npz",
        "priors": f"{MODEL_DIR}/model/priors.json",
    }
    if config["simulator"]["projection"] == "volumes":
        inputs["maps"] = expand(
            f"{MODEL_DIR}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS
        )
    if config["simulator"]["noise_power_tsv"]:
        inputs["noise"] = config["simulator"]["noise_power_tsv"]
    return inputs


def priors_inputs(wildcards=None):
    """The ensemble (θ range); a chosen dataset's STAR file; the card of a model trained elsewhere."""
    inputs = {"ensemble": f"{MODEL_DIR}/templates/ensemble.npz"}
    chosen = config["simulator"]["priors_from_dataset"]
    if chosen is not None:
        inputs["star"] = star_of(chosen)
    if config["model"]["trained"]:
        inputs["card"] = model_card()
    return inputs


# --------------------------------------------------------------- the datasets
def star_of(name):
    """The STAR file a dataset's particle stage reads: the demo's or the user's."""
    if DATASETS[name]["demo"] is not None:
        return DEMO_STAR.format(dataset=name)
    return DATASETS[name]["star"]


def dataset_star(wildcards):
    return star_of(wildcards.dataset)


def checked(function, *args):
    """``function(*args)`` of cryoflow.workflow.configuration, its ConfigError shown as Snakemake's error."""
    try:
        return function(*args)
    except ConfigError as err:
        raise WorkflowError(str(err))


@functools.cache
def dataset_index(name):
    """The selected particles of a user dataset, their stacks and groups (None for a demo dataset)."""
    return checked(configuration.dataset_index, name, DATASETS[name], config)


@functools.cache
def resolved_stacks(name):
    """Stack name as written → path, for every stack of a dataset (resolved once per run)."""
    return checked(
        configuration.resolved_stacks,
        name,
        DATASETS[name],
        dataset_index(name),
        config["image"]["pixel_size_A"],
    )


def stacks_of(name, rows=None):
    """The stacks holding ``rows`` of a dataset: inputs of the jobs that read them.

    A demo dataset's stacks are its Movies folder; a cryoSPARC export's are not tracked.
    """
    if DATASETS[name]["demo"] is not None:
        return [DEMO_STACKS.format(dataset=name)]
    index = dataset_index(name)
    if index is None:
        return []
    paths = resolved_stacks(name)
    return [paths[stack] for stack in index.stacks(rows)]


def n_shards(name):
    return DATASETS[name]["shards"]


def shard_ids(name):
    return [f"{i:03d}" for i in range(n_shards(name))]


def noise_stacks(wildcards):
    """Stacks of the particles the noise spectra are measured on."""
    index = dataset_index(wildcards.dataset)
    if index is None:
        return stacks_of(wildcards.dataset)
    settings = DATASETS[wildcards.dataset]["particles"]
    picked = starindex.noise_rows(
        index.groups, settings["noise_images"], config["seed"]
    )
    return stacks_of(
        wildcards.dataset, sorted(r for rows in picked.values() for r in rows)
    )


def shard_stacks(wildcards):
    index = dataset_index(wildcards.dataset)
    if index is None:
        return stacks_of(wildcards.dataset)
    rows = starindex.shard_rows(len(index), n_shards(wildcards.dataset))[
        int(wildcards.shard)
    ]
    return stacks_of(wildcards.dataset, rows)


def whitening_stacks(wildcards):
    index = dataset_index(wildcards.dataset)
    if index is None:
        return stacks_of(wildcards.dataset)
    n = DATASETS[wildcards.dataset]["report"]["mmd_max_points"]
    return stacks_of(
        wildcards.dataset, starindex.sample_rows(len(index), n, config["seed"])
    )


def source_settings(wildcards):
    """What the particle stage needs to read a dataset: STAR file, stacks, select, pixel size, contrast."""
    ds = DATASETS[wildcards.dataset]
    return {key: ds[key] for key in ("datadir", "select", "pixel_size_A", "contrast")}


def dataset_section(section, *keys):
    """A params function: a dataset's effective ``section`` (only ``keys`` when given)."""

    def settings(wildcards):
        values = DATASETS[wildcards.dataset][section]
        return {k: values[k] for k in keys} if keys else values

    return settings


# ------------------------------------------------------- the micrograph sets
def micrograph_star(wildcards):
    """The micrograph STAR file of a set (the demo's or the user's); none for a glob of files."""
    ms = MICROGRAPH_SETS[wildcards.mset]
    if ms["demo"] is not None:
        return [MSET_DEMO_STAR.format(mset=wildcards.mset)]
    return [ms["star"]] if ms["star"] else []


@functools.cache
def micrograph_files(name):
    """Every micrograph file of a user set, in input order (resolved once per run); None for a demo."""
    return checked(configuration.micrograph_files, name, MICROGRAPH_SETS[name])


def micrograph_shard_ids(name):
    return [f"{i:03d}" for i in range(MICROGRAPH_SETS[name]["shards"])]


def shard_micrographs(wildcards):
    """The micrographs one pick job reads: its share of the set, or the demo's folder."""
    files = micrograph_files(wildcards.mset)
    if files is None:
        return [MSET_DEMO_MICROGRAPHS.format(mset=wildcards.mset)]
    rows = starindex.shard_rows(len(files), MICROGRAPH_SETS[wildcards.mset]["shards"])
    return [files[i] for i in rows[int(wildcards.shard)]]


def micrograph_truth(wildcards):
    if MICROGRAPH_SETS[wildcards.mset]["demo"] is None:
        return []
    return [MSET_DEMO_TRUTH.format(mset=wildcards.mset)]


def micrograph_params(wildcards):
    """What the pick and report jobs read of a set's settings (not the demo's simulation settings)."""
    ms = MICROGRAPH_SETS[wildcards.mset]
    keys = (
        "datadir",
        "pixel_size_A",
        "contrast",
        "shards",
        "files",
        "defocus_A",
        "voltage_kV",
        "cs_mm",
        "amplitude_contrast",
        "picking",
    )
    out = {key: ms[key] for key in keys}
    out["match_radius_A"] = ms["demo"]["match_radius_A"] if ms["demo"] else None
    return out


def final_outputs():
    outputs = [
        f"{MODEL_DIR}/report/validation.json",
        expand(f"{MODEL_DIR}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS),
        # the template PDBs too: a changed template count then finds them missing and reruns templates
        expand(f"{MODEL_DIR}/templates/pdb/template_{{i}}.pdb", i=TEMPLATE_IDS),
    ]
    outputs += expand(f"{DATASET_DIR}/report/summary.json", dataset=list(DATASETS))
    outputs += [
        f"{DATASET_DIR}/report/likelihood.json".format(dataset=name)
        for name, ds in DATASETS.items()
        if ds["report"]["likelihood"] is not None
    ]
    outputs += expand(f"{MSET_DIR}/report/summary.json", mset=list(MICROGRAPH_SETS))
    # cryoSPARC datasets get their results back as .cs too
    outputs += [
        f"{DATASET_DIR}/inference/posterior.cs".format(dataset=name)
        for name in cryosparc_datasets()
    ]
    return outputs


def cryosparc_datasets():
    """Datasets given as a cryoSPARC .cs export."""
    return [name for name, ds in DATASETS.items() if str(ds["star"]).endswith(".cs")]
