"""cryoSPARC ``.cs`` particle exports, turned into RELION-named ``optics`` and ``particles`` blocks."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from cryoflow.errors import InputError
from cryoflow.io.starindex import CRYOSPARC_CTF, CRYOSPARC_UID, IMAGE_NAME, OPTICS_GROUP

UID_COLUMN = CRYOSPARC_UID  # the particle's uid as the particle table (and a results STAR file) keeps it


def read_cryosparc(path: str | Path) -> OrderedDict:
    """A cryoSPARC particle export as RELION-style ``optics`` and ``particles`` blocks.

    ``blob/path`` (a leading ``>`` dropped) and the 0-based ``blob/idx``
    become a 1-based ``_rlnImageName``; ``blob/psize_A`` becomes the optics
    group's ``_rlnImagePixelSize``; CTF fields get their RELION names and
    units (degrees). Loaded without pickle: the file is data only.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: cryoSPARC file not found (config key datasets.<name>.star)")
    try:
        records = np.load(path, allow_pickle=False)
    except Exception as err:
        raise InputError(f"{path}: not a cryoSPARC .cs array ({err})") from err
    names = records.dtype.names or ()
    missing = [f for f in ("blob/path", "blob/idx") if f not in names]
    if missing:
        raise InputError(f"{path}: field(s) {', '.join(missing)} missing (not a particle export)")
    stacks = [p.decode() if isinstance(p, bytes) else str(p) for p in records["blob/path"]]
    stacks = [s[1:] if s.startswith(">") else s for s in stacks]
    table = pd.DataFrame({IMAGE_NAME: [f"{int(i) + 1:06d}@{s}" for i, s in zip(records["blob/idx"], stacks)]})
    for field, (column, factor) in CRYOSPARC_CTF.items():
        if field in names:
            table[column] = records[field].astype(np.float64) * factor
    group = records["ctf/exp_group_id"].astype(int) if "ctf/exp_group_id" in names else np.ones(len(records), int)
    table[OPTICS_GROUP] = group
    if "uid" in names:
        table[UID_COLUMN] = records["uid"].astype(np.uint64).astype(str)
    optics = pd.DataFrame({OPTICS_GROUP: np.unique(group)})
    if "blob/psize_A" in names:
        pixel = pd.Series(records["blob/psize_A"].astype(float)).groupby(group).first()
        optics["rlnImagePixelSize"] = pixel.reindex(optics[OPTICS_GROUP]).to_numpy()
    if "blob/shape" in names:
        size = pd.Series(records["blob/shape"][:, -1].astype(int)).groupby(group).first()
        optics["rlnImageSize"] = size.reindex(optics[OPTICS_GROUP]).to_numpy()
    return OrderedDict([("optics", optics), ("particles", table)])
