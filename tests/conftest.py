import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT / "tests" / "data"
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def data_dir():
    return DATA


@pytest.fixture(scope="session")
def adk_ca():
    """4AKE chain A as CA beads (214 residues)."""
    from cryoflow import structure

    return structure.select_atoms(structure.load_structure(ROOT / "resources/structures/4ake.pdb"), ["A"], "CA")


@pytest.fixture()
def relion_job(tmp_path, data_dir):
    """The shared RELION 3.1 sample laid out as a real job folder: project/Extract/job133/..."""
    job = tmp_path / "project" / "Extract" / "job133"
    (job / "Micrographs").mkdir(parents=True)
    shutil.copy(data_dir / "relion31.mrcs", job / "Micrographs" / "relion31.mrcs")
    text = (data_dir / "relion31.star").read_text()
    (job / "particles.star").write_text(text.replace("@relion31.mrcs", "@Extract/job133/Micrographs/relion31.mrcs"))
    return job / "particles.star"
