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
