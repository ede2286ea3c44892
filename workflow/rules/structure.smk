rule structure:
    output:
        pdb=f"{M}/structure/reference.pdb",
        chains=f"{M}/structure/chains.pdb",
    log:
        f"{MLOG}/structure.log",
    benchmark:
        f"{MBENCH}/structure.tsv"
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
