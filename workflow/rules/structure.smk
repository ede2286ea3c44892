rule structure:
    output:
        pdb=f"{MODEL_DIR}/structure/reference.pdb",
        chains=f"{MODEL_DIR}/structure/chains.pdb",
    log:
        f"{MODEL_LOG}/structure.log",
    benchmark:
        f"{MODEL_BENCH}/structure.tsv"
    conda:
        "../../envs/structure.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        structure=config["structure"],
    script:
        "../../scripts/structure.py"
