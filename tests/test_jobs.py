"""The job pattern: every rule's stage is a package function over a plain ``Job``, callable without Snakemake."""

import ast
import csv
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from snakemake.iocontainers import Namedlist

from cryoflow.chunks import chunks
from cryoflow.job import Job
from cryoflow.jobs import structure, templates, volumes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("total,size", [(0, 4), (1, 4), (8, 4), (10, 4), (3, 100)])
def test_chunks_cover_the_range_once_in_order(total, size):
    parts = list(chunks(total, size))
    covered = [i for part in parts for i in range(part.start, part.stop)]
    assert covered == list(range(total))
    assert all(0 < part.stop - part.start <= size for part in parts)


def test_a_chunk_size_below_one_is_refused():
    with pytest.raises(ValueError, match="chunk size 0"):
        list(chunks(5, 0))


def test_a_job_from_snakemake_holds_plain_values():
    class Rule:  # what Snakemake hands a rule script, with its named lists
        input = Namedlist(fromdict={"star": "a.star", "stacks": Namedlist(["s1.mrcs", "s2.mrcs"])})
        output = Namedlist(fromdict={"npz": "out.npz"})
        params = Namedlist(fromdict={"seed": 7, "image": {"box_px": 32}})
        wildcards = Namedlist(fromdict={"shard": "3"})
        log = Namedlist(["job.log"])
        threads = 2

    job = Job.from_snakemake(Rule)
    assert job.input.star == "a.star" and job.input.stacks == ["s1.mrcs", "s2.mrcs"]
    assert type(job.input.stacks) is list and type(job.input.star) is str
    assert job.params.image == {"box_px": 32} and job.params.seed == 7
    assert job.wildcards.shard == "3" and job.log == "job.log" and job.threads == 2
    assert "stacks" in job.input and "noise" not in job.input and job.input.get("noise") is None


def test_every_rule_script_is_one_call_of_its_stage():
    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [node for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
        assert len(calls) == 1, script.name
        call = calls[0].value
        assert isinstance(call.func, ast.Attribute) and call.func.attr == "run", script.name
        assert isinstance(call.func.value, ast.Name) and call.func.value.id == script.stem, script.name
        assert len(script.read_text().splitlines()) <= 25, script.name


def test_structure_templates_and_volumes_run_from_python(tmp_path):
    """Three stages chained by plain paths: 4AKE chain A as CA beads, five normal-mode templates ordered
    along θ with the reference at θ = 0, and one map per template holding the model's electrons."""
    settings = {"source": str(ROOT / "resources/structures/4ake.pdb"), "chains": ["A"], "beads": "CA"}
    settings.update(format="pdb", cache_dir=str(tmp_path / "cache"), rcsb_url="http://127.0.0.1:9")
    reference = tmp_path / "structure/reference.pdb"
    structure.run(
        Job.of(output={"pdb": reference, "chains": tmp_path / "structure/chains.pdb"}, params={"structure": settings})
    )
    nma = {"modes": [1, 2], "max_rmsd_A": 6.0, "cutoff_A": 15.0, "spring_constant": 1.0}
    recipe = {"method": "nma", "n_templates": 5, "theta_dims": 1, "nma": nma, "distance_selections": None}
    pdbs = [str(tmp_path / f"templates/template_{i:03d}.pdb") for i in range(5)]
    ensemble_npz, table = tmp_path / "templates/ensemble.npz", tmp_path / "templates/theta.tsv"
    templates.run(
        Job.of(
            input={"pdb": str(reference)},
            output={"ensemble": ensemble_npz, "table": table, "pdbs": pdbs},
            params={"templates": recipe, "beads": "CA"},
        )
    )
    with np.load(ensemble_npz) as data:
        theta_A, rmsd_A, weights = data["theta_A"], data["rmsd_A"], data["weights"]
    assert np.all(np.diff(theta_A) > 0) and np.count_nonzero(theta_A == 0) == 1
    assert theta_A.min() == pytest.approx(-6.0, abs=0.05) and theta_A.max() == pytest.approx(6.0, abs=0.05)
    reference_index = int(np.flatnonzero(theta_A == 0)[0])
    np.testing.assert_allclose(rmsd_A[reference_index], np.abs(theta_A), atol=0.05)  # θ = ±RMSD to the reference
    with open(table, newline="") as handle:
        assert [float(row["theta_A"]) for row in csv.DictReader(handle, delimiter="\t")] == pytest.approx(theta_A)
    assert all(Path(p).is_file() for p in pdbs)
    maps = [str(tmp_path / f"volumes/template_{i:03d}.mrc") for i in range(5)]
    grid = {"voxel_size_A": 4.0, "box_vox": 24}
    volumes.run(
        Job.of(input={"ensemble": ensemble_npz}, output={"maps": maps}, params={"volumes": grid, "bead_sigma_A": 4.0})
    )
    for path in maps:
        with mrcfile.open(path) as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(4.0)
            assert mrc.data.sum() * 4.0**3 == pytest.approx(weights.sum(), rel=0.02)  # the map holds the mass
