rule md:
    input:
        pdb=rules.structure.output.chains,
    output:
        prepared=f"{MODEL_DIR}/templates/md/prepared.pdb",
        trajectory=f"{MODEL_DIR}/templates/md/trajectory.dcd",
    log:
        f"{MODEL_LOG}/md.log",
    benchmark:
        f"{MODEL_BENCH}/md.tsv"
    conda:
        "../../envs/md.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=24 * 60,
        gres=cluster.md_gpus(config["templates"]["md"]["platform"]),
    params:
        md=config["templates"]["md"],
        seed=config["seed"],
    script:
        "../../scripts/md.py"


rule templates:
    input:
        unpack(template_inputs),
    output:
        ensemble=f"{MODEL_DIR}/templates/ensemble.npz",
        table=f"{MODEL_DIR}/templates/theta.tsv",
        pdbs=expand(f"{MODEL_DIR}/templates/pdb/template_{{i}}.pdb", i=TEMPLATE_IDS),
    log:
        f"{MODEL_LOG}/templates.log",
    benchmark:
        f"{MODEL_BENCH}/templates.tsv"
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
        maps=expand(f"{MODEL_DIR}/volumes/template_{{i}}.mrc", i=TEMPLATE_IDS),
    log:
        f"{MODEL_LOG}/volumes.log",
    benchmark:
        f"{MODEL_BENCH}/volumes.tsv"
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
