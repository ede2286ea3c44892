"""Results back into cryoSPARC: a ``.cs`` export's rows with cryoflow's posterior fields added, written
with cryosparc-tools' ``Dataset`` in the form cryoSPARC's "Import Result Group" and cryosparc-tools read."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from cryosparc.dataset import Dataset

from cryoflow.errors import InputError
from cryoflow.io.cryosparc import UID_COLUMN
from cryoflow.io.fileio import atomic_path


def result_field(column: str) -> str:
    """The cryoSPARC field of a cryoflow STAR column: cryoflowThetaMeanAngst → cryoflow/theta_mean_A,
    cryoflowTheta2Q05Angst → cryoflow/theta2_q05_A, cryoflowParticleProbability → cryoflow/p_particle."""
    if column == "cryoflowParticleProbability":
        return "cryoflow/p_particle"
    name = column.removeprefix("cryoflow")
    unit = "_A" if name.endswith("Angst") else ""
    words = re.findall(r"[A-Z][a-z]*\d*|\d+", name.removesuffix("Angst"))
    return "cryoflow/" + "_".join(w.lower() for w in words) + unit


def write_results(source_cs: str | Path, table: pd.DataFrame, path: str | Path) -> int:
    """Write ``source_cs``'s rows for the particles in ``table`` (matched by uid, in the table's order) with
    every input field kept and the table's cryoflow columns added as ``cryoflow/…`` fields; returns the row
    count. A table row whose uid the export lacks is an error naming it."""
    source = Dataset.load(str(source_cs))
    uids = table[UID_COLUMN].astype(np.uint64).to_numpy()
    position = {int(uid): i for i, uid in enumerate(source["uid"])}
    missing = [int(u) for u in uids if int(u) not in position]
    if missing:
        raise InputError(f"{source_cs}: uid {missing[0]} of the results is not in this export ({len(missing)} missing)")
    out = source.take(np.array([position[int(u)] for u in uids], dtype=np.int64))
    columns = [c for c in table.columns if c.startswith("cryoflow")]
    out.add_fields([result_field(c) for c in columns], ["f4"] * len(columns))
    for column in columns:
        out[result_field(column)] = table[column].to_numpy(np.float32)
    with atomic_path(path) as tmp:
        out.save(str(tmp))
    return len(out)
