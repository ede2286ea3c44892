rule infer:
    input:
        model=rules.train.output.model,
        stack=rules.particles.output.stack,
        star=rules.particles.output.star,
    output:
        star=f"{RESULTS}/inference/shard{{shard}}.star",
        npz=f"{RESULTS}/inference/shard{{shard}}.npz",
    log:
        f"{LOGS}/infer/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/infer/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=config["train"]["gpus"],
    params:
        inference=config["inference"],
        seed=config["seed"],
    script:
        "../../scripts/infer.py"


rule gather_posteriors:
    input:
        stars=expand(rules.infer.output.star, shard=SHARDS),
        npzs=expand(rules.infer.output.npz, shard=SHARDS),
    output:
        star=f"{RESULTS}/inference/posterior.star",
        npz=f"{RESULTS}/inference/posterior.npz",
    log:
        f"{LOGS}/gather_posteriors.log",
    benchmark:
        f"{BENCH}/gather_posteriors.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/gather_posteriors.py"


rule whitening_check:
    input:
        star=particles_star(),
        noise=rules.particle_noise.output.noise,
        model=rules.train.output.model,
    output:
        npz=f"{RESULTS}/inference/whitening_check.npz",
    log:
        f"{LOGS}/whitening_check.log",
    benchmark:
        f"{BENCH}/whitening_check.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        particles=config["particles"],
        image=config["image"],
        inference=config["inference"],
        n_particles=config["report"]["mmd_max_points"],
        seed=config["seed"],
    script:
        "../../scripts/whitening_check.py"


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
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=config,
    script:
        "../../scripts/validate.py"
