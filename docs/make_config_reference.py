"""Write docs/config.md, the reference of every config key, from workflow/schemas/config.schema.yaml.

python docs/make_config_reference.py          # rewrite docs/config.md
python docs/make_config_reference.py --check  # exit 1 when docs/config.md is out of date (CI)
"""

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
OUTPUT = ROOT / "docs" / "config.md"


def type_of(node: dict, root: dict) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[1]
        return {"range": "[low, high]", "positive_range": "[low, high] > 0"}.get(name, f"{name} (below)")
    if "oneOf" in node:
        return " or ".join(type_of(option, root) for option in node["oneOf"])
    if "enum" in node:
        return " \\| ".join(str(v) for v in node["enum"])
    kind = node.get("type", "any")
    kinds = kind if isinstance(kind, list) else [kind]
    text = " or ".join("null" if k == "null" else k for k in kinds)
    if "array" in kinds and "items" in node and "type" in node["items"]:
        text = text.replace("array", f"list of {node['items']['type']}")
    return text


def rows(node: dict, root: dict, prefix: str) -> list[str]:
    """One table row per key, depth first."""
    out = []
    for key, sub in node.get("properties", {}).items():
        dotted = f"{prefix}.{key}" if prefix else key
        default = json.dumps(sub["default"], ensure_ascii=False) if "default" in sub else "optional"
        if key in node.get("required", []):
            default = "required"
        if sub.get("type") == "object" and "properties" in sub and "default" in sub:
            default = "(section)"
        description = sub.get("description", "").replace("|", "\\|")
        out.append(f"| `{dotted}` | {type_of(sub, root)} | {default} | {description} |")
        if sub.get("type") == "object":
            out += rows(sub, root, dotted)
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict) and "properties" in extra:
                out += rows(extra, root, f"{dotted}.<name>")
    return out


def reference() -> str:
    schema = yaml.safe_load(SCHEMA.read_text())
    lines = [
        "# Configuration reference",
        "",
        "Generated from `workflow/schemas/config.schema.yaml` by `python docs/make_config_reference.py`;",
        "CI fails when this file is out of date. The schema is the only place defaults live: a key left",
        "out of a config takes the default below. Units are in the key names; θ is in Å.",
        "",
        "A config names one **model** (`model`, `structure`, `templates`, `volumes`, `image`, `simulator`,",
        "`train`, `validation`: trained once, under `results/<model.name>/`) and any number of",
        "**datasets** inferred with it (`datasets.<name>`, under `results/<model.name>/datasets/<name>/`).",
        "The top-level `particles`, `inference` and `report` sections are shared by every dataset; a",
        "dataset overrides any of their keys in a section of the same name of its own.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    lines += rows(schema, schema, "")
    for name, definition in schema.get("definitions", {}).items():
        if "properties" in definition:
            lines += ["", f"## {name}", "", definition.get("description", ""), ""]
            lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
            lines += rows(definition, schema, name)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = reference()
    if "--check" in sys.argv:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            sys.exit(f"{OUTPUT} is out of date: run python docs/make_config_reference.py")
    else:
        OUTPUT.write_text(text)
