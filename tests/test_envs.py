"""Every import a rule's script makes (directly or through the cryoflow modules it uses) is in its conda env."""

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# import name → package name in the env files (PyPI names in pip sections)
PACKAGE_OF = {
    "numpy": "numpy",
    "pandas": "pandas",
    "prody": "prody",
    "mrcfile": "mrcfile",
    "starfile": "starfile",
    "torch": "torch",
    "zuko": "zuko",
    "lampe": "lampe",
    "matplotlib": "matplotlib",
    "umap": "umap-learn",
    "scipy": "scipy",
    "yaml": "pyyaml",
    "mdtraj": "mdtraj",
    "openmm": "openmm",
    "pdbfixer": "pdbfixer",
    "cryosparc": "cryosparc-tools",
    "jaxtyping": "jaxtyping",
}


def rules_with_envs():
    """(rule, env file, script) for every rule in workflow/rules/*.smk."""
    found = []
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            conda = re.search(r"^\s+conda:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
            found.append(
                (
                    name,
                    conda and (smk.parent / conda.group(1)).resolve(),
                    script and (smk.parent / script.group(1)).resolve(),
                )
            )
    return found


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module.split(".")[0] == "cryoflow":
                # a module of a subpackage (from cryoflow.io import star) or a name in a module
                names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def third_party_imports(script: Path) -> set[str]:
    """Third-party top-level modules imported by ``script`` and, transitively, by cryoflow modules."""
    todo, seen, external = [script], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in top_level_imports(path):
            top = name.split(".")[0]
            if top == "cryoflow":
                # the module itself and each package on its path (whose __init__ runs on import)
                parts = name.split(".")
                for n in range(1, len(parts) + 1):
                    base = ROOT / "src" / "/".join(parts[:n])
                    for module in (base.with_suffix(".py"), base / "__init__.py"):
                        if module.is_file():
                            todo.append(module)
            elif top not in sys.stdlib_module_names and top != "__future__":
                external.add(top)
    return external


SPEC = re.compile(r"^([A-Za-z0-9_.-]+)\s*(.*)$")
# conda-forge packages an env may take from conda, where the conda build matters; with ranges, never pins
CONDA_PACKAGES = {"python", "pip", "numpy", "openmm", "pdbfixer"}


def env_sections(env: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(conda packages, pip packages) of an env file: name → version spec."""
    spec = yaml.safe_load(env.read_text())
    conda, pip = {}, {}
    for dep in spec["dependencies"]:
        for entry, target in ((e, pip) for e in dep["pip"]) if isinstance(dep, dict) else [(dep, conda)]:
            name, version = SPEC.match(entry).groups()
            target[name.lower()] = version.strip()
    return conda, pip


def env_packages(env: Path) -> dict[str, str]:
    conda, pip = env_sections(env)
    return {**conda, **pip}


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


RULES = rules_with_envs()


def test_every_rule_has_an_env_and_a_script():
    assert {r[0] for r in RULES} >= {
        "structure",
        "templates",
        "volumes",
        "train",
        "demo_particles",
        "particles",
        "infer",
        "validate",
        "report",
    }
    for name, env, script in RULES:
        assert env is not None and env.is_file(), f"rule {name}: conda env missing"
        assert script is not None and script.is_file(), f"rule {name}: script missing"


@pytest.mark.parametrize("name,env,script", RULES, ids=[r[0] for r in RULES])
def test_script_imports_are_in_the_rule_env(name, env, script):
    packages = env_packages(env)
    missing = sorted(PACKAGE_OF.get(m, m) for m in third_party_imports(script) if PACKAGE_OF.get(m, m) not in packages)
    assert not missing, f"rule {name}: {env.name} lacks {missing}"


@pytest.mark.parametrize("env", sorted((ROOT / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_env_pins_are_those_of_requirements_txt(env):
    """One source of pins: each pip entry is pinned as requirements.txt pins it; conda keeps to Python, pip
    and the few packages whose conda builds matter, with ranges (exact pip numbers may not exist there)."""
    spec = yaml.safe_load(env.read_text())
    assert spec["channels"][0] == "conda-forge"
    conda, pip = env_sections(env)
    pins = requirement_pins()
    for name, version in pip.items():
        assert version == "==" + pins[name], f"{env.name}: pip {name}{version}, requirements.txt {pins.get(name)}"
    assert set(conda) <= CONDA_PACKAGES, f"{env.name}: {set(conda) - CONDA_PACKAGES} belong in the pip section"
    assert conda["python"] == "=3.11"
    for name, version in conda.items():
        if name != "python":
            assert not version.startswith("=") or version.startswith("=="), f"{env.name}: {name} pinned in conda"
            assert version.startswith((">", "<")), f"{env.name}: {name} needs a range"
    assert not pip or "pip" in conda, f"{env.name}: a pip section needs pip"


def test_import_map_knows_every_third_party_import():
    """An unknown import name would be checked under its own name; make sure that is deliberate."""
    imports = set().union(*(third_party_imports(s) for _, _, s in RULES))
    assert imports <= set(PACKAGE_OF), imports - set(PACKAGE_OF)


def test_subpackages_import_nothing():
    """Each rule's env carries only its stage's dependencies: a subpackage's __init__ must import nothing,
    or importing one module would pull in its neighbours' dependencies."""
    for init in sorted((ROOT / "src" / "cryoflow").glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{init.relative_to(ROOT)} imports {ast.unparse(imports[0])}"
