rule structure:
    output:
        pdb=f"{RESULTS}/structure/reference.pdb",
        chains=f"{RESULTS}/structure/chains.pdb",
    log:
        f"{LOGS}/structure.log",
    benchmark:
        f"{BENCH}/structure.tsv"
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
