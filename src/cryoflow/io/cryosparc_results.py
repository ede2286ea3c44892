"""Results back into cryoSPARC: a ``.cs`` export's rows with cryoflow's posterior fields added, written
with cryosparc-tools' ``Dataset``, and the ``.csg`` result-group file beside it that cryoSPARC's "Import Result
Group" job opens: YAML naming, per result slot (``blob``, ``ctf``, ``cryoflow``…), the ``.cs`` that holds it
(``>name``: beside the group file), its row count and its type (``particle.<slot>``)."""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
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


def write_result_group(cs_path: str | Path, path: str | Path, title: str) -> dict[str, Any]:
    """Write the ``.csg`` result group of the particle ``.cs`` file ``cs_path`` (in the same folder) to
    ``path``: one result per slot of its fields; returns the group as written."""
    cs_path, path = Path(cs_path), Path(path)
    if cs_path.parent.resolve() != path.parent.resolve():
        raise ValueError(f"{path}: a result group's .cs files lie beside it ({cs_path} does not)")
    records = np.load(cs_path, mmap_mode="r", allow_pickle=False)  # the header only: fields and row count
    slots = dict.fromkeys(field.split("/", 1)[0] for field in records.dtype.names if "/" in field)
    group = {
        "created": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "group": {
            "description": f"{title} (cryoflow; posterior over θ in the cryoflow slot)",
            "name": "particles",
            "title": title,
            "type": "particle",
        },
        "results": {
            slot: {"metafile": f">{cs_path.name}", "num_items": len(records), "type": f"particle.{slot}"}
            for slot in slots
        },
    }
    with atomic_path(path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(group, sort_keys=False))
    return group
