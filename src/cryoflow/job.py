"""A rule's job as plain values: the one thing every stage function (``cryoflow.jobs.<rule>.run``) takes.

A rule script turns Snakemake's ``snakemake`` object into a :class:`Job` and
calls its stage; the same stage runs from Python with plain paths and settings::

    from cryoflow.job import Job
    from cryoflow.jobs import volumes

    volumes.run(Job.of(
        input={"ensemble": "results/demo/templates/ensemble.npz"},
        output={"maps": ["t000.mrc", "t001.mrc"]},
        params={"volumes": {"voxel_size_A": 2.0, "box_vox": 64}, "bead_sigma_A": 2.0},
    ))

Standard library only: ``cryoflow.jobs`` modules import their stage's
dependencies, this module none.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from cryoflow.logs import configure


class Fields(SimpleNamespace):
    """Named values read as attributes (``job.input.star``), like Snakemake's named lists."""

    def keys(self) -> list[str]:
        return list(vars(self))

    def __contains__(self, name: object) -> bool:
        return name in vars(self)

    def get(self, name: str, default: Any = None) -> Any:
        return vars(self).get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _plain(value: Any) -> Any:
    """A Snakemake named list's entry as a str, or a list of str for a list of files."""
    if isinstance(value, str):
        return str(value)  # Snakemake's file names are str subclasses
    if isinstance(value, int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return dict(value)
    return [_plain(item) for item in value] if hasattr(value, "__iter__") else value


def _fields(values: Mapping[str, Any] | Fields | None) -> Fields:
    if isinstance(values, Fields):
        return values
    return Fields(**dict(values or {}))


@dataclasses.dataclass(frozen=True)
class Job:
    """One job of a rule: its files, settings, threads, log and wildcards."""

    input: Fields
    output: Fields
    params: Fields
    threads: int = 1
    log: str | None = None
    wildcards: Fields = dataclasses.field(default_factory=Fields)

    @classmethod
    def of(
        cls,
        input: Mapping[str, Any] | None = None,
        output: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        threads: int = 1,
        log: str | None = None,
        wildcards: Mapping[str, Any] | None = None,
    ) -> Job:
        """A job from plain mappings (what a test or a notebook passes)."""
        return cls(_fields(input), _fields(output), _fields(params), int(threads), log, _fields(wildcards))

    @classmethod
    def from_snakemake(cls, smk: Any) -> Job:
        """The job of the running rule script (Snakemake's ``snakemake`` object)."""

        def named(names: Any) -> dict[str, Any]:
            return {key: _plain(getattr(names, key)) for key in names.keys()}

        return cls.of(
            named(smk.input),
            named(smk.output),
            {key: getattr(smk.params, key) for key in smk.params.keys()},
            int(smk.threads),
            str(smk.log[0]) if smk.log else None,
            named(smk.wildcards),
        )

    def start_log(self) -> logging.Logger:
        """Log to the rule's log file (and stderr); an error that ends the job is written there too."""
        return configure(self.log)
