"""The particle reader under a seeded fuzzer (tests/particle_fuzzer.py): every mutated input is read exactly
as an independent reader reads it, or stops with an error that names the file."""

import logging
import warnings

import particle_fuzzer

from cryoflow.errors import InputError
from cryoflow.io import particles, starindex

CASES, SEED = 600, 2025


def test_every_mutated_input_is_read_right_or_stopped_naming_the_file(tmp_path, record_property):
    logging.disable(logging.WARNING)  # lenient reads warn by design; thousands of lines otherwise
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcomes = particle_fuzzer.fuzz(tmp_path, CASES, SEED)
    finally:
        logging.disable(logging.NOTSET)
    # for the terminal summary (conftest.py); a report property reaches it from an xdist worker too
    record_property("fuzzer", {"seed": SEED, "outcomes": [[*key, n] for key, n in outcomes.items()]})
    by_outcome = {
        o: sum(n for (_, _, got), n in outcomes.items() if got == o) for o in ("agrees", "lenient", "stopped")
    }
    assert sum(by_outcome.values()) == CASES
    # the fuzzer reaches all three outcomes and every kind of file
    assert min(by_outcome.values()) > 0, by_outcome
    assert {target for target, _, _ in outcomes} == {"star", "cs", "mrcs"}


def dag_view(star):
    """The DAG's index of a metadata file (standard library for STAR files), or None where it refuses."""
    try:
        return starindex.index_cs(star) if star.suffix == ".cs" else starindex.index_star(star)
    except InputError:
        return None


def test_the_dag_index_reads_every_mutated_file_as_the_particle_stage_does(tmp_path):
    """The RELION rules live twice: with the standard library for the DAG (``io.starindex``) and with pandas
    for the jobs (``io.particles``). On every metadata file the fuzzer makes, wherever the particle stage
    reads the file, the index names the same stacks in the same order, the same optics groups (as a
    partition of the rows) and the same pixel sizes."""
    logging.disable(logging.WARNING)
    base = particle_fuzzer.make_dataset(tmp_path / "base")
    compared = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for case in range(CASES):
                star, mutated, kind = particle_fuzzer.mutate_case(base, tmp_path / "case", SEED * 100_000 + case)
                if mutated != star:  # a stack mutation leaves the metadata as it was
                    continue
                try:
                    table = particles.load_particles(star).table
                except InputError:
                    continue
                index, where = dag_view(star), f"case {case}: {star.name} {kind}"
                assert index is not None, f"{where}: the particle stage reads it, the DAG index refuses it"
                stacks = [name.split("@", 1)[1] if "@" in name else name for name in table["rlnImageName"]]
                assert [s.lstrip(">") for s in index.stack_names] == [s.lstrip(">") for s in stacks], where
                assert particle_fuzzer.partition(index.groups) == particle_fuzzer.partition(table["optics_group"]), (
                    where
                )
                if index.pixel_sizes_A:
                    assert index.pixel_sizes_A == tuple(sorted(set(table["pixel_size_A"]))), where
                compared += 1
    finally:
        logging.disable(logging.NOTSET)
    assert compared > CASES // 4  # most metadata mutations are read
