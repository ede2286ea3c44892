"""The config's JSON schema: loading it (each dataset's override sections typed like the shared ones), a
validator whose integers are whole numbers as written and whose ranges are in order, messages that name the
key, and the schema's defaults filled in where the config leaves a key out (the only place defaults live).

Standard library, PyYAML and jsonschema only (the DAG side)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import yaml

from cryoflow.errors import ConfigError

# the schema of the repository this package lies in (src/cryoflow/workflow/ → workflow/schemas/)
SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
# sections a dataset may override for itself; the top-level ones hold the shared defaults
DATASET_SECTIONS = ("particles", "inference", "report")
# and what a micrograph set may override
MICROGRAPH_SECTIONS = ("picking",)


def key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def explained(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(key, message) of an error; for a value that fits none of oneOf's forms, the reason from the closest
    form, at the key inside the value it concerns (``validation.likelihood.n_images``, not the block)."""
    # reasons inside the value come first; then the forms the value has the type of, where any
    deeper = [e for e in error.context if len(e.absolute_path) > len(error.absolute_path)]
    fitting = deeper or [e for e in error.context if e.validator != "type"]
    if not fitting:
        return key_path(error), error.message
    return explained(jsonschema.exceptions.best_match(fitting))


def without_defaults(schema):
    """A copy of a schema with every default removed (a dataset's overrides must not fill them in)."""
    if isinstance(schema, dict):
        return {k: without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [without_defaults(v) for v in schema]
    return schema


OVERRIDE = "_override"  # suffix of a definition's copy without defaults, which override sections refer to


def override_section(schema: dict, section: dict) -> dict:
    """An override section: ``section`` without defaults, its references pointing at definitions without
    defaults too (added to ``schema``), so that validating a dataset's overrides fills in nothing and the
    shared section's values stand wherever the dataset says nothing."""

    def redirect(node):
        if isinstance(node, dict):
            out = {k: redirect(v) for k, v in node.items()}
            ref = out.get("$ref", "")
            if ref.startswith("#/definitions/") and not ref.endswith(OVERRIDE):
                name = ref.rsplit("/", 1)[1]
                definitions = schema["definitions"]
                if name + OVERRIDE not in definitions:
                    definitions[name + OVERRIDE] = redirect(without_defaults(definitions[name]))
                out["$ref"] = ref + OVERRIDE
            return out
        if isinstance(node, list):
            return [redirect(v) for v in node]
        return node

    return redirect(without_defaults(section))


@functools.cache
def _full_schema(path: Path) -> dict:
    schema = yaml.safe_load(path.read_text())
    for parent, sections in (("datasets", DATASET_SECTIONS), ("micrographs", MICROGRAPH_SECTIONS)):
        overrides = schema["properties"][parent]["additionalProperties"]["properties"]
        for section in sections:
            overrides[section] = {
                **override_section(schema, schema["properties"][section]),
                "description": overrides[section]["description"],
            }
    return schema


def full_schema(path: str | Path = SCHEMA) -> dict:
    """The schema file, with each dataset's (and micrograph set's) override sections typed like the
    top-level sections (a fresh copy: callers may change it)."""
    return copy.deepcopy(_full_schema(Path(path)))


def ordered_range(validator, ordered, value, schema):
    """The schema keyword ``ordered``: a [low, high] range with low <= high."""
    pair = isinstance(value, list) and len(value) == 2
    if ordered and pair and all(isinstance(v, (int, float)) for v in value) and value[0] > value[1]:
        yield jsonschema.ValidationError(f"{value} is reversed: a range is [low, high] (did you mean {value[::-1]}?)")


def strict_validator(schema: dict):
    """The schema's validator class, with 'integer' meaning a whole number as written (32, not 32.0) and
    ranges [low, high] in order (keyword ``ordered``)."""
    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(base, validators={"ordered": ordered_range}, type_checker=checker)


def fill_defaults(schema: dict, value, root: dict) -> None:
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


def validate(cfg: dict, path: str | Path = SCHEMA) -> dict:
    """Validate ``cfg`` against the schema and fill in its defaults (in place); every error at once."""
    schema = full_schema(path)
    errors = sorted(strict_validator(schema)(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config:\n" + "\n".join("  {}: {}".format(*explained(e)) for e in errors))
    fill_defaults(schema, cfg, schema)
    return cfg


def likelihood_defaults(block: dict, path: str | Path = SCHEMA) -> dict:
    """A ``likelihood`` block with the schema's defaults filled in (in place)."""
    schema = full_schema(path)
    fill_defaults(schema["definitions"]["likelihood"], block, schema)
    return block


def read_config_file(path: str | Path) -> dict:
    """A config file's YAML, or a ``ConfigError`` naming the file, the line and column, and what is wrong
    there (Snakemake's own message names neither)."""
    path = Path(path)
    try:
        value = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(part) for part in (err.context, err.problem) if part)
        raise ConfigError(f"{path}{where}: not valid YAML ({what})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path}: a config is a mapping of keys to values, not a {type(value).__name__}")
    return value or {}
