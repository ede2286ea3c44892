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


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    import re

    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return found


def test_every_link_between_the_pages_resolves():
    import re

    pages = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.relative_to(ROOT)}: link to {target} (no such file)"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked.read_text()), f"{page.relative_to(ROOT)}: no heading #{anchor}"


def test_the_readme_fits_on_two_screens_and_runs_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.startswith("python -m pip")]
    assert len(ci) == 1 and ci[0] in readme.splitlines(), "the README's test command is not .ci/run's"
    for page in ("demo", "workflow", "formats", "cluster", "config", "benchmarks"):
        assert f"(docs/{page}.md" in readme, page
