"""cryoflow: per-particle conformations from cryo-EM images by simulation-based inference."""

from snakemake.utils import min_version, validate

min_version("8.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/config.smk"  # config/config.yaml, checked
include: "workflow/rules/common.smk"
include: "workflow/rules/structure.smk"
include: "workflow/rules/templates.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/particles.smk"
include: "workflow/rules/inference.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/micrographs.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
