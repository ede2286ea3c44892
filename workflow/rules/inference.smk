rule infer:
    input:
        model=rules.train.output.model,
        stack=rules.particles.output.stack,
        star=rules.particles.output.star,
    output:
        star=f"{RESULTS}/inference/posterior.star",
        npz=f"{RESULTS}/inference/posterior.npz",
    log:
        f"{LOGS}/infer.log",
    benchmark:
        f"{BENCH}/infer.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=config["train"]["gpus"],
    params:
        inference=config["inference"],
        seed=config["seed"],
    script:
        "../../scripts/infer.py"


rule validate:
    input:
        unpack(simulator_inputs),
        model=rules.train.output.model,
    output:
        npz=f"{RESULTS}/validation/simulations.npz",
    log:
        f"{LOGS}/validate.log",
    benchmark:
        f"{BENCH}/validate.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: workflow.cores
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=config,
    script:
        "../../scripts/validate.py"
