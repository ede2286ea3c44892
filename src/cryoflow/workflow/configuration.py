"""The workflow's config, checked when the DAG is built: the schema (``cryoflow.workflow.schema``), the files
the config names, cross-key rules, image grids (``gridcheck``), likelihood grid sizes, a trained model's
card (``modelcard``), each dataset's and micrograph set's effective settings, and the particles and
micrographs each one lists.

Standard library, PyYAML and jsonschema only: ``workflow/rules/config.smk`` calls ``load`` in Snakemake's own
environment, and ``common.smk``'s input functions call ``dataset_index`` and ``micrograph_files``. Every check
raises ``ConfigError`` naming the key.
"""

from __future__ import annotations

import copy
import glob
from collections.abc import Mapping
from pathlib import Path

from cryoflow.errors import ConfigError, InputError
from cryoflow.io import mrcheader, starindex
from cryoflow.io.structure_text import ca_positions, cached_path, is_pdb_id, looks_like_structure
from cryoflow.likelihood import gridsize
from cryoflow.workflow import gridcheck, modelcard, schema
from cryoflow.workflow.schema import DATASET_SECTIONS, MICROGRAPH_SECTIONS

# sections that a config given on the command line defines whole (not merged into config/config.yaml's)
WHOLE_SECTIONS = ("datasets", "micrographs")


def load(cfg: dict, command_line: dict | None = None, workflow_root: Path | None = None) -> dict:
    """Check the config Snakemake assembled (in place, defaults filled in) and return it.

    ``command_line`` is what --configfile/--config gave: a ``datasets`` or ``micrographs`` section there
    defines exactly those (Snakemake merges it into config/config.yaml's, which would keep the demo's).
    ``workflow_root`` is the workflow's folder: a relative ``structure.source`` found there and not in the
    working directory is the workflow's bundled file (a deployed project's config names
    ``resources/structures/…`` as the workflow's own config does).
    """
    given = command_line or {}
    for section in WHOLE_SECTIONS:
        if section in given:
            cfg[section] = copy.deepcopy(given[section])
    if workflow_root is not None and isinstance(cfg.get("structure"), dict):
        cfg["structure"]["source"] = bundled(cfg["structure"].get("source"), workflow_root)
    return check_config(cfg)


def bundled(path, workflow_root: Path):
    """``path`` as the working directory holds it, else the workflow's own file of that relative name."""
    if not isinstance(path, str) or Path(path).is_absolute() or Path(path).exists() or is_pdb_id(path):
        return path
    candidate = workflow_root / path
    return str(candidate) if candidate.is_file() else path


def train_params(train: dict) -> dict:
    """The train section as the train rule's params: keys added later are left out at their default (off, one
    rank), so a model trained before they existed is not retrained on an upgrade."""
    return modelcard.without_added(train)


def merged(base: dict, override: dict | None) -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def check_config(cfg: dict) -> dict:
    """Validate against the JSON schema (filling defaults), then check files and cross-key rules."""
    schema.validate(cfg)
    crop, box = cfg["train"]["embedding"]["crop_px"], cfg["image"]["box_px"]
    if crop is not None and crop >= box:
        raise ConfigError(f"train.embedding.crop_px: {crop} is not smaller than image.box_px ({box}); use null")
    check_structure(cfg["structure"])
    check_templates(cfg["templates"])
    check_input_files(cfg)
    for name, ds in cfg["datasets"].items():
        check_dataset(name, ds, cfg)
    for name, ms in cfg["micrographs"].items():
        check_micrograph_set(name, ms, cfg)
    chosen = cfg["simulator"]["priors_from_dataset"]
    if chosen is not None and chosen not in cfg["datasets"]:
        raise ConfigError(
            f"simulator.priors_from_dataset: no dataset {chosen!r} (datasets: {', '.join(cfg['datasets'])})"
        )
    check_ranks(cfg["train"])
    vol = cfg["volumes"]
    vol.setdefault("voxel_size_A", cfg["image"]["pixel_size_A"])
    vol.setdefault("box_vox", cfg["image"]["box_px"])
    source, where = structure_file(cfg["structure"])
    positions = None if source is None else ca_positions(source, cfg["structure"]["chains"])
    raise_problems(gridcheck.grid_problems(cfg, positions, where))
    if cfg["model"]["trained"]:
        modelcard.check_trained_model(cfg)
    datasets = {name: dataset_settings(cfg, name) for name in cfg["datasets"]}
    blocks = [("validation.likelihood", cfg["validation"]["likelihood"])]
    blocks += [(f"datasets.{name}.report.likelihood", ds["report"]["likelihood"]) for name, ds in datasets.items()]
    for where, block in blocks:
        if block is not None:
            raise_problems(gridsize.likelihood_problems(block, where, cfg))
    check_single_gpu_jobs(cfg, datasets)
    if cfg["validation"]["likelihood"] is not None and not cfg["validation"]["fixed_snr"]:
        raise ConfigError(
            "validation.fixed_snr: empty, and validation.likelihood computes the exact posterior on the "
            "fixed-SNR sets; give at least one SNR, or set validation.likelihood: null"
        )
    return cfg


def raise_problems(problems: list[str]) -> None:
    if problems:
        raise ConfigError("\n".join(problems))


def structure_file(structure: dict) -> tuple[str | None, str]:
    """The structure file the grid checks read, and how messages name it: a local file, or a PDB id's entry
    once fetched into ``structure.cache_dir`` (None before: its size is known only after the structure job)."""
    source = structure["source"]
    if not is_pdb_id(source):
        return source, source
    cached = cached_path(source, structure["cache_dir"], structure["format"])
    return (str(cached), f"{source.upper()} ({cached})") if cached.is_file() else (None, source)


def check_structure(structure: dict) -> None:
    source = structure["source"]
    if is_pdb_id(source):
        return
    if not Path(source).is_file():
        raise ConfigError(f"structure.source: file {source!r} not found (and it is not a 4-character PDB id)")
    if not looks_like_structure(source):
        raise ConfigError(
            f"structure.source: {source!r} has no ATOM/HETATM records and no _atom_site loop: not a PDB or mmCIF file"
        )


def check_templates(templates: dict) -> None:
    user = templates["ensemble"]
    if templates["method"] == "ensemble":
        if not user["pdb_files"] and not user["trajectory"]:
            raise ConfigError("templates.ensemble: give pdb_files or a trajectory (templates.method is ensemble)")
        for pattern in user["pdb_files"]:
            if not glob.glob(pattern):
                raise ConfigError(f"templates.ensemble.pdb_files: no file matches {pattern!r}")
    if templates["theta_dims"] == 2 and templates["method"] != "nma":
        raise ConfigError("templates.theta_dims: 2 needs templates.method nma (two modes on a grid)")


def tsv_header(path) -> list[str]:
    with open(path, errors="replace") as handle:
        return handle.readline().rstrip("\n").split("\t")


def check_input_files(cfg: dict) -> None:
    """Files the config names and no rule makes exist when the DAG is built (else a job would fail later,
    naming no key); a TSV also has the columns its job reads."""
    user = cfg["templates"]["ensemble"]
    files: list[tuple[str, str | None, tuple[str, ...]]] = [
        ("simulator.noise_power_tsv", cfg["simulator"]["noise_power_tsv"], ("frequency_per_A", "noise_power"))
    ]
    if cfg["templates"]["method"] == "ensemble":
        files += [
            ("templates.ensemble.trajectory", user["trajectory"], ()),
            ("templates.ensemble.topology", user["topology"], ()),
            ("templates.ensemble.theta_tsv", user["theta_tsv"], ("theta_A",)),
        ]
    for key, path, columns in files:
        # none given, or a workflow output (a dataset's noise spectrum)
        if path is None or Path(path).parts[:1] == ("results",):
            continue
        if not Path(path).is_file():
            raise ConfigError(f"{key}: file {path!r} not found")
        missing = [c for c in columns if c not in tsv_header(path)]
        if missing:
            raise ConfigError(f"{key}: {path} has no column(s) {', '.join(missing)} (tab-separated, with a header row)")


def check_ranks(train: dict) -> None:
    """The global batch splits evenly over the data-parallel ranks (CPU processes or GPUs, per node)."""
    device = train["device"]
    per_node = []
    if device in ("auto", "cpu"):
        per_node.append(("train.processes", train["processes"]))
    if device != "cpu" and train["gpus"] > 1:
        per_node.append(("train.gpus", train["gpus"]))
    for key, count in per_node:
        ranks = count * train["nodes"]
        if train["batch_size"] % ranks:
            raise ConfigError(
                f"train.batch_size: {train['batch_size']} does not split evenly over {ranks} ranks "
                f"({key} {count} × train.nodes {train['nodes']}); use a multiple of {ranks}"
            )
        local = train["batch_size"] // ranks
        if train["junk_fraction"] > 0 and round(train["junk_fraction"] * local) < 1:
            raise ConfigError(
                f"train.junk_fraction: {train['junk_fraction']:g} of each rank's {local} images is less than one "
                f"({ranks} ranks over train.batch_size {train['batch_size']}): raise the batch or the fraction"
            )


def check_launch(train: dict, local_exec: bool, cores: int | None, env: Mapping[str, str]) -> None:
    """What the machine running the train job can start, checked when the DAG is built: with jobs on this
    machine (``local_exec``), no more CPU ranks than its ``cores``, and several nodes only inside a SLURM
    allocation."""
    if local_exec and train["nodes"] > 1 and "SLURM_JOB_ID" not in env:
        raise ConfigError(
            f"train.nodes: {train['nodes']} nodes need SLURM (run with --profile profiles/slurm, or inside an "
            "allocation); this run executes jobs on this machine"
        )
    if local_exec and cores is not None and train["device"] != "cuda" and train["processes"] > cores:
        raise ConfigError(
            f"train.processes: {train['processes']} CPU ranks but this machine, which runs the jobs, has "
            f"{cores} cores; use at most {cores}"
        )


def check_single_gpu_jobs(cfg: dict, datasets: dict[str, dict]) -> None:
    """An infer or pick job is one process on one device: more GPUs would be held and never used.
    ``datasets``: each dataset's effective settings (``dataset_settings``)."""
    sets = [("datasets", name, "inference", settings) for name, settings in datasets.items()]
    sets += [("micrographs", name, "picking", micrograph_settings(cfg, name)) for name in cfg["micrographs"]]
    for parent, name, section, settings in sets:
        gpus = settings[section]["gpus"]
        if gpus > 1:
            own = "gpus" in (cfg[parent][name].get(section) or {})
            key = f"{parent}.{name}.{section}.gpus" if own else f"{section}.gpus"
            more = f"more shards ({parent}.{name}.shards)"
            raise ConfigError(f"{key}: {gpus} GPUs, but each job is one process on one GPU; use 1, and {more}")


def check_datadir(where: str, section: dict) -> None:
    """A datadir that is given must be a folder (else it would be ignored without a word)."""
    datadir = section.get("datadir")
    if datadir is not None and not Path(datadir).is_dir():
        raise ConfigError(f"{where}.datadir: folder {datadir!r} not found")


def check_populations(where: str, populations: list, cfg: dict) -> None:
    two_d = cfg["templates"]["theta_dims"] == 2
    for i, state in enumerate(populations):
        if isinstance(state["theta_A"], list) != two_d:
            raise ConfigError(
                f"{where}.populations.{i}.theta_A: give "
                + ("[θ1, θ2]" if two_d else "one number")
                + f" when templates.theta_dims is {cfg['templates']['theta_dims']}"
            )


def check_demo(where: str, section: dict, count_key: str, cfg: dict) -> None:
    """A demo dataset or micrograph set: at least one item (``count_key``) per shard, populations in θ's shape."""
    demo, shards = section["demo"], section["shards"]
    if demo[count_key] < shards:
        raise ConfigError(f"{where}.shards: {shards} shards but demo.{count_key} is {demo[count_key]}")
    check_populations(f"{where}.demo", demo["populations"], cfg)


def check_dataset(name: str, ds: dict, cfg: dict) -> None:
    where = f"datasets.{name}"
    if (ds["star"] is None) == (ds["demo"] is None):
        raise ConfigError(f"{where}: give either star (your particles) or demo (synthetic)")
    if ds["demo"] is not None:
        check_demo(where, ds, "n_particles", cfg)
    elif not Path(ds["star"]).is_file():
        raise ConfigError(f"{where}.star: file {ds['star']!r} not found")
    check_datadir(where, ds)


def check_micrograph_set(name: str, ms: dict, cfg: dict) -> None:
    where = f"micrographs.{name}"
    given = [key for key in ("star", "files", "demo") if ms[key] is not None]
    if len(given) != 1:
        raise ConfigError(
            f"{where}: give one of star (a CTF job's micrograph STAR file), files (a glob of MRC "
            f"micrographs) or demo (synthetic); given: {', '.join(given) or 'none'}"
        )
    if ms["star"] is not None and not Path(ms["star"]).is_file():
        raise ConfigError(f"{where}.star: file {ms['star']!r} not found")
    check_datadir(where, ms)
    if ms["files"] is not None:
        if not glob.glob(ms["files"]):
            raise ConfigError(f"{where}.files: no file matches {ms['files']!r}")
        for key in ("defocus_A", "pixel_size_A"):
            if ms[key] is None:
                raise ConfigError(f"{where}.{key}: needed with files (there is no STAR file to give it)")
    if ms["demo"] is not None:
        check_demo(where, ms, "n_micrographs", cfg)


def dataset_settings(cfg: dict, name: str) -> dict:
    """One dataset's effective settings: its own keys, and the shared sections with its overrides."""
    ds = cfg["datasets"][name]
    out = {k: v for k, v in ds.items() if k not in DATASET_SECTIONS}
    for section in DATASET_SECTIONS:
        out[section] = merged(cfg[section], ds.get(section))
    # a dataset's own likelihood block over the shared null default
    if isinstance(out["report"].get("likelihood"), dict):
        schema.likelihood_defaults(out["report"]["likelihood"])
    return out


def micrograph_settings(cfg: dict, name: str) -> dict:
    """One micrograph set's effective settings: its own keys, and picking with its overrides."""
    ms = cfg["micrographs"][name]
    out = {k: v for k, v in ms.items() if k not in MICROGRAPH_SECTIONS}
    for section in MICROGRAPH_SECTIONS:
        out[section] = merged(cfg[section], ms.get(section))
    return out


def dataset_index(name: str, ds: dict, cfg: dict) -> starindex.DatasetIndex | None:
    """The selected particles of a user dataset (``ds``: its effective settings), their stacks and groups;
    None for a demo dataset, and for a cryoSPARC export whose select columns exist only once converted."""
    if ds["demo"] is not None:
        return None
    try:
        if str(ds["star"]).endswith(".cs"):
            index = starindex.index_cs(ds["star"], ds["select"])
            if index is None:
                return None
        else:
            index = starindex.index_star(ds["star"], ds["select"], ds["pixel_size_A"])
    except InputError as err:
        raise ConfigError(f"datasets.{name}: {err}") from None
    if len(index) < ds["shards"]:
        raise ConfigError(f"datasets.{name}.shards: {ds['shards']} shards but {ds['star']} has {len(index)} particles")
    likelihood = ds["report"]["likelihood"]
    if likelihood and "ctf_known" in likelihood["nuisance"] and not index.has_defocus():
        raise ConfigError(
            f"datasets.{name}.report.likelihood.nuisance: ctf_known needs each particle's defocus, "
            f"and {ds['star']} has no _rlnDefocusU column"
        )
    conditioned, prior = modelcard.ctf_conditioning(cfg)
    if conditioned and not index.has_defocus():
        key = "model.trained" if cfg["model"]["trained"] else "train.condition_on_ctf"
        raise ConfigError(
            f"{key}: the model needs each particle's defocus (it is CTF-conditioned), and datasets.{name} "
            f"({ds['star']}) has no _rlnDefocusU column"
        )
    if prior is not None:
        check_defocus_in_prior(name, ds, index, prior, from_card=bool(cfg["model"]["trained"]))
    return index


def check_defocus_in_prior(
    name: str, ds: dict, index: starindex.DatasetIndex, prior: tuple[float, float], from_card: bool
) -> None:
    """A CTF-conditioned model infers particles whose mean defocus lies inside its ``prior`` (as the infer job
    checks again, per particle): refused here, before any training, naming the dataset."""
    if index.defocus_span_A is None:
        return
    low, high = prior
    margin = modelcard.CTF_PRIOR_TOLERANCE * (high - low)
    lowest, highest = index.defocus_span_A
    if lowest < low - margin or highest > high + margin:
        source = "the card of model.trained" if from_card else "simulator.defocus_range_A"
        raise ConfigError(
            f"datasets.{name}: mean defocus {lowest:.0f}–{highest:.0f} Å in {ds['star']}, outside the "
            f"CTF-conditioned model's prior {low:.0f}–{high:.0f} Å ({source}): widen the prior and train again"
        )


def resolved_stacks(name: str, ds: dict, index: starindex.DatasetIndex, pixel_size_A: float) -> dict[str, str]:
    """Stack name as written → path, for every stack of a dataset; the first stack's box, resampled from the
    particles' pixel sizes to the training's (``pixel_size_A``), checked to fit in memory."""
    try:
        paths = {stack: str(starindex.resolve_stack_path(stack, ds["star"], ds["datadir"])) for stack in index.stacks()}
    except InputError as err:
        raise ConfigError(f"datasets.{name}: {err}") from None
    header = mrcheader.mrc_header(next(iter(paths.values()))) if paths else None
    if header is not None:
        key = f"datasets.{name}.pixel_size_A" if ds["pixel_size_A"] else f"datasets.{name}.star"
        problems = gridcheck.resampling_problems(key, header[0], index.pixel_sizes_A, pixel_size_A, str(ds["star"]))
        if problems:
            raise ConfigError(problems[0])
    return paths


def micrograph_files(name: str, ms: dict) -> list[str] | None:
    """Every micrograph file of a user set (``ms``: its effective settings), in input order, each checked
    for truncation; None for a demo set."""
    if ms["demo"] is not None:
        return None
    try:
        if ms["star"]:
            files = [str(p) for _, p in starindex.index_micrographs(ms["star"], ms["datadir"])]
        else:
            files = sorted(glob.glob(ms["files"]))
    except InputError as err:
        raise ConfigError(f"micrographs.{name}: {err}") from None
    if len(files) < ms["shards"]:
        raise ConfigError(f"micrographs.{name}.shards: {ms['shards']} shards but the set has {len(files)} micrographs")
    key = "star" if ms["star"] else "files"
    for path in files:
        problem = mrcheader.mrc_truncation(path)
        if problem:
            raise ConfigError(f"micrographs.{name}.{key}: {problem}")
    return files
