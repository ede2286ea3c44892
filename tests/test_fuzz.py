"""The particle reader under a seeded fuzzer (tests/particle_fuzzer.py): every mutated input is read exactly
as an independent reader reads it, or stops with an error that names the file."""

import logging
import warnings

import particle_fuzzer

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
