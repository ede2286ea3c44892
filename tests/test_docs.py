"""docs/config.md is generated from the schema and must be current."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "make_config_reference.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_schema_key_is_in_the_reference():
    import yaml

    text = (ROOT / "docs" / "config.md").read_text()
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for section, node in schema["properties"].items():
        for key in node.get("properties", {}):
            assert f"`{section}.{key}`" in text, f"{section}.{key}"
