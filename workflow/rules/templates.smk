rule md:
    input:
        pdb=rules.structure.output.chains,
    output:
        prepared=f"{RESULTS}/templates/md/prepared.pdb",
        trajectory=f"{RESULTS}/templates/md/trajectory.dcd",
    log:
        f"{LOGS}/md.log",
    benchmark:
        f"{BENCH}/md.tsv"
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
        ensemble=f"{RESULTS}/templates/ensemble.npz",
        table=f"{RESULTS}/templates/theta.tsv",
        pdbs=expand(f"{RESULTS}/templates/pdb/template_{{i}}.pdb", i=TEMPLATE_IDS),
    log:
        f"{LOGS}/templates.log",
    benchmark:
        f"{BENCH}/templates.tsv"
    conda:
        "../../envs/templates.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        templates=config["templates"],
        beads=config["structure"]["beads"],
    script:
        "../../scripts/templates.py"


rule volumes:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        maps=expand(f"{RESULTS}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS),
    log:
        f"{LOGS}/volumes.log",
    benchmark:
        f"{BENCH}/volumes.tsv"
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
