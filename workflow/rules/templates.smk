rule md:
    input:
        pdb=rules.structure.output.chains,
    output:
        prepared=f"{M}/templates/md/prepared.pdb",
        trajectory=f"{M}/templates/md/trajectory.dcd",
    log:
        f"{MLOG}/md.log",
    benchmark:
        f"{MBENCH}/md.tsv"
    conda:
        "../../envs/md.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gpu=config["train"]["gpus"],
    params:
        md=config["templates"]["md"],
        seed=config["seed"],
    script:
        "../../scripts/md.py"


rule templates:
    input:
        unpack(template_inputs),
    output:
        ensemble=f"{M}/templates/ensemble.npz",
        table=f"{M}/templates/theta.tsv",
        pdbs=expand(f"{M}/templates/pdb/template_{{i}}.pdb", i=TEMPLATE_IDS),
    log:
        f"{MLOG}/templates.log",
    benchmark:
        f"{MBENCH}/templates.tsv"
    conda:
        "../../envs/templates.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        templates={k: v for k, v in config["templates"].items() if k != "md"},
        beads=config["structure"]["beads"],
    script:
        "../../scripts/templates.py"


rule volumes:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        maps=expand(f"{M}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS),
    log:
        f"{MLOG}/volumes.log",
    benchmark:
        f"{MBENCH}/volumes.tsv"
    conda:
        "../../envs/templates.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        volumes=config["volumes"],
        bead_sigma_A=config["simulator"]["bead_sigma_A"],
    script:
        "../../scripts/volumes.py"
