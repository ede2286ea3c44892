"""cryoflow: simulation-based inference of conformations from cryo-EM particles.

The package holds the physics and the machine learning; the Snakemake rule
scripts in ``scripts/`` only read their inputs, call into it and write files.
Sub-modules import their own heavy dependencies (torch, ProDy, ...), so that
importing one stage's module works inside that stage's conda environment.
"""

__version__ = "0.1.0"  # the release: pyproject.toml reads it, every model card records it (CHANGELOG.md)
