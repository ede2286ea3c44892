"""Config: schema validation (defaults from the schema only), files and cross-key checks, per-dataset
settings. Included first: every other rule file reads the checked config."""

import copy
import glob
import gzip
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import jsonschema
import yaml

# Rule scripts import the cryoflow package from src/ in whichever conda env
# they run; jobs on cluster nodes re-read this Snakefile and get the same. The
# Snakefile itself uses only cryoflow's standard-library modules (starindex).
SRC = str(Path(workflow.basedir) / "src")
_pythonpath = os.environ.get("PYTHONPATH", "")
if SRC not in _pythonpath.split(os.pathsep):
    os.environ.update(PYTHONPATH=os.pathsep.join(p for p in (SRC, _pythonpath) if p))
if SRC not in sys.path:
    sys.path.insert(0, SRC)

# standard library only, importable once src/ is on the path
from cryoflow import gridcheck, gridsize  # noqa: E402

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
# as cryoflow.structure.PDB_ID_PATTERN: 4-character or extended PDB ids
PDB_ID = re.compile(
    r"^[0-9][A-Za-z0-9]{3}$|^pdb_[0-9]{5}[A-Za-z0-9]{3}$", re.IGNORECASE
)
# sections a dataset may override for itself; the top-level ones hold the shared defaults
DATASET_SECTIONS = ("particles", "inference", "report")
# and what a micrograph set may override
MICROGRAPH_SECTIONS = ("picking",)


class ConfigError(Exception):
    """A config value is wrong; the message names the key."""


def key_path(error):
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def error_message(error):
    """The message; for a value that fits none of oneOf's forms, the reason from the closest form."""
    # the forms the value has the type of, where any: their reasons say what is wrong with it
    fitting = [e for e in error.context if e.validator != "type"]
    if fitting:
        return jsonschema.exceptions.best_match(fitting).message
    return error.message


def without_defaults(schema):
    """A copy of a schema with every default removed (a dataset's overrides must not fill them in)."""
    if isinstance(schema, dict):
        return {k: without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [without_defaults(v) for v in schema]
    return schema


def full_schema():
    """The schema file, with each dataset's override sections typed like the top-level sections."""
    schema = yaml.safe_load(SCHEMA.read_text())
    dataset = schema["properties"]["datasets"]["additionalProperties"]["properties"]
    for section in DATASET_SECTIONS:
        dataset[section] = {
            **without_defaults(schema["properties"][section]),
            "description": dataset[section]["description"],
        }
    micrograph_set = schema["properties"]["micrographs"]["additionalProperties"]
    for section in MICROGRAPH_SECTIONS:
        micrograph_set["properties"][section] = {
            **without_defaults(schema["properties"][section]),
            "description": micrograph_set["properties"][section]["description"],
        }
    return schema


def ordered_range(validator, ordered, value, schema):
    """The schema keyword ``ordered``: a [low, high] range with low <= high."""
    pair = isinstance(value, list) and len(value) == 2
    if ordered and pair and all(isinstance(v, (int, float)) for v in value):
        if value[0] > value[1]:
            yield jsonschema.ValidationError(
                f"{value} is reversed: a range is [low, high] (did you mean {value[::-1]}?)"
            )


def strict_validator(schema):
    """The schema's validator, with 'integer' meaning a whole number as written (32, not 32.0) and
    ranges [low, high] in order (keyword ``ordered``)."""
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine(
        "integer",
        lambda _, value: isinstance(value, int) and not isinstance(value, bool),
    )
    return jsonschema.validators.extend(
        base, validators={"ordered": ordered_range}, type_checker=checker
    )


def looks_like_structure(path):
    """True when a file holds ATOM/HETATM records (PDB) or an _atom_site loop (mmCIF)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", errors="replace") as handle:
        return any(
            line.startswith(("ATOM", "HETATM", "_atom_site.")) for line in handle
        )


def fill_defaults(schema, value, root):
    """Set the schema's defaults where the config leaves a key out (the only place defaults live)."""
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    for option in schema.get("oneOf", []):
        if isinstance(value, dict) and "$ref" in option:
            fill_defaults(option, value, root)
    if not isinstance(value, dict):
        return
    properties = schema.get("properties", {})
    for key, sub in properties.items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            fill_defaults(sub, value[key], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in properties:
                fill_defaults(extra, value[key], root)


def merged(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        out[key] = (
            merged(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def template_recipe(cfg):
    """What fixes the templates: the structure (file content, or PDB id) and the templates section."""
    structure = cfg["structure"]
    source = structure["source"]
    recipe = {
        "structure": {
            "source": source if PDB_ID.match(source) else sha256_file(source),
            "chains": structure["chains"],
            "beads": structure["beads"],
        },
        "templates": {k: v for k, v in cfg["templates"].items() if k != "md"},
    }
    if cfg["templates"]["method"] == "md":
        recipe["templates"]["md"] = {
            k: v for k, v in cfg["templates"]["md"].items() if k != "platform"
        }
    return recipe


def recipe_sha256(recipe):
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def differences(card_value, here, prefix):
    """Dotted keys whose values differ between a card's recipe and this config's."""
    if isinstance(card_value, dict) and isinstance(here, dict):
        found = []
        for key in sorted(set(card_value) | set(here)):
            found += differences(
                card_value.get(key), here.get(key), f"{prefix}.{key}" if prefix else key
            )
        return found
    return (
        []
        if card_value == here
        else [f"{prefix}: card {card_value!r}, config {here!r}"]
    )


def check_trained_model(cfg):
    """A model trained elsewhere must fit this config: θ dims, image grid and template recipe."""
    path = Path(cfg["model"]["trained"])
    if not path.is_file():
        raise ConfigError(f"model.trained: file {str(path)!r} not found")
    card_path = path.with_name("card.json")
    if not card_path.is_file():
        raise ConfigError(
            f"model.trained: {card_path} not found (the model card must lie beside the model file)"
        )
    try:
        card = json.loads(card_path.read_text())
    except ValueError as err:
        raise ConfigError(f"model.trained: {card_path} is not JSON ({err})")
    if "weights_sha256" in card and sha256_file(path) != card["weights_sha256"]:
        raise ConfigError(
            f"model.trained: {path} does not match the field 'weights_sha256' of {card_path}: "
            "the card belongs to other weights"
        )
    found = []
    for field in ("architecture", "config", "template_recipe", "priors"):
        if field not in card:
            raise ConfigError(f"model.trained: {card_path} has no field {field!r}")
    theta_range = card["architecture"]["theta_range_A"]
    dims = 2 if isinstance(theta_range[0], list) else 1
    if dims != cfg["templates"]["theta_dims"]:
        found.append(
            f"templates.theta_dims: card {dims}, config {cfg['templates']['theta_dims']}"
        )
    found += differences(card["config"].get("image"), cfg["image"], "image")
    here = template_recipe(cfg)
    found += differences(card["template_recipe"], here, "")
    if found:
        raise ConfigError(
            f"model.trained: {path} was trained for another setting ({card_path}):\n  "
            + "\n  ".join(found)
        )
    return card


def check_dataset(name, ds, cfg):
    where = f"datasets.{name}"
    if (ds["star"] is None) == (ds["demo"] is None):
        raise ConfigError(
            f"{where}: give either star (your particles) or demo (synthetic)"
        )
    if ds["demo"] is not None:
        if ds["demo"]["n_particles"] < ds["shards"]:
            raise ConfigError(
                f"{where}.shards: {ds['shards']} shards but demo.n_particles is {ds['demo']['n_particles']}"
            )
        check_populations(f"{where}.demo", ds["demo"]["populations"], cfg)
    elif not Path(ds["star"]).is_file():
        raise ConfigError(f"{where}.star: file {ds['star']!r} not found")
    check_datadir(where, ds)


def check_datadir(where, section):
    """A datadir that is given must be a folder (else it would be ignored without a word)."""
    datadir = section.get("datadir")
    if datadir is not None and not Path(datadir).is_dir():
        raise ConfigError(f"{where}.datadir: folder {datadir!r} not found")


def check_populations(where, populations, cfg):
    two_d = cfg["templates"]["theta_dims"] == 2
    for i, state in enumerate(populations):
        if isinstance(state["theta_A"], list) != two_d:
            raise ConfigError(
                f"{where}.populations.{i}.theta_A: give "
                + ("[θ1, θ2]" if two_d else "one number")
                + f" when templates.theta_dims is {cfg['templates']['theta_dims']}"
            )


def check_micrograph_set(name, ms, cfg):
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
                raise ConfigError(
                    f"{where}.{key}: needed with files (there is no STAR file to give it)"
                )
    if ms["demo"] is not None:
        if ms["demo"]["n_micrographs"] < ms["shards"]:
            raise ConfigError(
                f"{where}.shards: {ms['shards']} shards but demo.n_micrographs is {ms['demo']['n_micrographs']}"
            )
        check_populations(f"{where}.demo", ms["demo"]["populations"], cfg)


def structure_positions(source, cfg):
    """A local structure's selected CA atoms; None for a PDB id (fetched by the structure job)."""
    if PDB_ID.match(source):
        return None
    return gridcheck.ca_positions(source, cfg["structure"]["chains"])


def tsv_header(path):
    with open(path, errors="replace") as handle:
        return handle.readline().rstrip("\n").split("\t")


def check_input_files(cfg):
    """Files the config names and no rule makes exist when the DAG is built (else a job would fail later,
    naming no key); a TSV also has the columns its job reads."""
    user = cfg["templates"]["ensemble"]
    files = [
        (
            "simulator.noise_power_tsv",
            cfg["simulator"]["noise_power_tsv"],
            ("frequency_per_A", "noise_power"),
        )
    ]
    if cfg["templates"]["method"] == "ensemble":
        files += [
            ("templates.ensemble.trajectory", user["trajectory"], ()),
            ("templates.ensemble.topology", user["topology"], ()),
            ("templates.ensemble.theta_tsv", user["theta_tsv"], ("theta_A",)),
        ]
    for key, path, columns in files:
        if path is None or Path(path).parts[:1] == (
            "results",
        ):  # a workflow output (a dataset's noise spectrum)
            continue
        if not Path(path).is_file():
            raise ConfigError(f"{key}: file {path!r} not found")
        missing = [c for c in columns if c not in tsv_header(path)]
        if missing:
            raise ConfigError(
                f"{key}: {path} has no column(s) {', '.join(missing)} (tab-separated, with a header row)"
            )


def check_ranks(train):
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


def check_config(cfg):
    """Validate against the JSON schema (filling defaults), then check files and cross-key rules."""
    schema = full_schema()
    validator_class = strict_validator(schema)
    errors = sorted(
        validator_class(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path)
    )
    if errors:
        lines = [f"  {key_path(e)}: {error_message(e)}" for e in errors]
        raise ConfigError("invalid config:\n" + "\n".join(lines))
    fill_defaults(schema, cfg, schema)
    source = cfg["structure"]["source"]
    if not PDB_ID.match(source) and not Path(source).is_file():
        raise ConfigError(
            f"structure.source: file {source!r} not found (and it is not a 4-character PDB id)"
        )
    if not PDB_ID.match(source) and not looks_like_structure(source):
        raise ConfigError(
            f"structure.source: {source!r} has no ATOM/HETATM records and no _atom_site loop: not a PDB or mmCIF file"
        )
    user = cfg["templates"]["ensemble"]
    if cfg["templates"]["method"] == "ensemble":
        if not user["pdb_files"] and not user["trajectory"]:
            raise ConfigError(
                "templates.ensemble: give pdb_files or a trajectory (templates.method is ensemble)"
            )
        for pattern in user["pdb_files"]:
            if not glob.glob(pattern):
                raise ConfigError(
                    f"templates.ensemble.pdb_files: no file matches {pattern!r}"
                )
    check_input_files(cfg)
    if cfg["templates"]["theta_dims"] == 2 and cfg["templates"]["method"] != "nma":
        raise ConfigError(
            "templates.theta_dims: 2 needs templates.method nma (two modes on a grid)"
        )
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
    problems = gridcheck.grid_problems(cfg, structure_positions(source, cfg), source)
    if problems:
        raise ConfigError("\n".join(problems))
    if cfg["model"]["trained"]:
        check_trained_model(cfg)
    blocks = [("validation.likelihood", cfg["validation"]["likelihood"])]
    blocks += [
        (
            f"datasets.{name}.report.likelihood",
            dataset_settings(cfg, name)["report"]["likelihood"],
        )
        for name in cfg["datasets"]
    ]
    for where, block in blocks:
        if block is not None:
            problems = gridsize.likelihood_problems(block, where, cfg)
            if problems:
                raise ConfigError("\n".join(problems))
    return cfg


def dataset_settings(cfg, name):
    """One dataset's effective settings: its own keys, and the shared sections with its overrides."""
    ds = cfg["datasets"][name]
    out = {k: v for k, v in ds.items() if k not in DATASET_SECTIONS}
    for section in DATASET_SECTIONS:
        out[section] = merged(cfg[section], ds.get(section))
    # a dataset's own likelihood block over the shared null default
    if isinstance(out["report"].get("likelihood"), dict):
        schema = full_schema()
        fill_defaults(
            schema["definitions"]["likelihood"], out["report"]["likelihood"], schema
        )
    return out


def micrograph_settings(cfg, name):
    """One micrograph set's effective settings: its own keys, and picking with its overrides."""
    ms = cfg["micrographs"][name]
    out = {k: v for k, v in ms.items() if k not in MICROGRAPH_SECTIONS}
    for section in MICROGRAPH_SECTIONS:
        out[section] = merged(cfg[section], ms.get(section))
    return out


# A config given on the command line (--configfile, --config) that lists datasets or micrograph sets
# defines exactly those: Snakemake merges it into config/config.yaml, which would keep the demo's beside them.
for _section in ("datasets", "micrographs"):
    if _section in (workflow.config_settings.overwrite_config or {}):
        config[_section] = copy.deepcopy(
            workflow.config_settings.overwrite_config[_section]
        )

try:
    check_config(config)
except ConfigError as err:
    raise WorkflowError(str(err))
