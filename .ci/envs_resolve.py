"""Resolve every conda env's pip section against the package registry (pip's dry run), so that a pin
that does not exist fails here and not on a user's cluster. Prints one line per env; exits 1 on failure."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
failed = []
for env in sorted((ROOT / "envs").glob("*.yaml")):
    spec = yaml.safe_load(env.read_text())
    pip = [entry for dep in spec["dependencies"] if isinstance(dep, dict) for entry in dep.get("pip", [])]
    if not pip:
        print(f"{env.name}: no pip section")
        continue
    with tempfile.TemporaryDirectory() as tmp:
        requirements, report = Path(tmp) / "requirements.txt", Path(tmp) / "report.json"
        requirements.write_text("\n".join(pip) + "\n")
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-r", str(requirements)]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            failed.append(env.name)
            print(f"{env.name}: does not resolve\n{result.stderr[-2000:]}")
            continue
        installs = json.loads(report.read_text())["install"]
        print(f"{env.name}: {len(pip)} pins resolve ({len(installs)} packages with their dependencies)")
sys.exit(1 if failed else 0)
