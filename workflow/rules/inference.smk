rule infer:
    input:
        model=model_file(),
        stack=rules.particles.output.stack,
        star=rules.particles.output.star,
    output:
        star=f"{DATASET_DIR}/inference/shard{{shard}}.star",
        npz=f"{DATASET_DIR}/inference/shard{{shard}}.npz",
    log:
        f"{DATASET_LOG}/infer/shard{{shard}}.log",
    benchmark:
        f"{DATASET_BENCH}/infer/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=lambda w: cluster.job_gpus(
            DATASETS[w.dataset]["inference"]["device"],
            DATASETS[w.dataset]["inference"]["gpus"],
        ),
    params:
        inference=dataset_section(
            "inference",
            "device",
            "batch_size",
            "grid_points",
            "grid_points_2d",
            "n_samples",
        ),
        seed=config["seed"],
    script:
        "../../scripts/infer.py"


rule gather_posteriors:
    input:
        stars=lambda w: expand(
            rules.infer.output.star, dataset=w.dataset, shard=shard_ids(w.dataset)
        ),
        npzs=lambda w: expand(
            rules.infer.output.npz, dataset=w.dataset, shard=shard_ids(w.dataset)
        ),
    output:
        star=f"{DATASET_DIR}/inference/posterior.star",
        npz=f"{DATASET_DIR}/inference/posterior.npz",
    log:
        f"{DATASET_LOG}/gather_posteriors.log",
    benchmark:
        f"{DATASET_BENCH}/gather_posteriors.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../../scripts/gather_posteriors.py"


rule posterior_cs:
    input:
        star=rules.gather_posteriors.output.star,
        cs=lambda w: DATASETS[w.dataset]["star"],
    output:
        cs=f"{DATASET_DIR}/inference/posterior.cs",
        csg=f"{DATASET_DIR}/inference/posterior.csg",
    log:
        f"{DATASET_LOG}/posterior_cs.log",
    benchmark:
        f"{DATASET_BENCH}/posterior_cs.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../../scripts/posterior_cs.py"


rule whitening_check:
    input:
        star=dataset_star,
        stacks=whitening_stacks,
        noise=rules.particle_noise.output.noise,
        model=model_file(),
    output:
        npz=f"{DATASET_DIR}/inference/whitening_check.npz",
    log:
        f"{DATASET_LOG}/whitening_check.log",
    benchmark:
        f"{DATASET_BENCH}/whitening_check.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=lambda w: cluster.gpu_if_cuda(DATASETS[w.dataset]["inference"]["device"]),
        mem_mb=4000,
        runtime=60,
    params:
        source=source_settings,
        inference=dataset_section("inference", "device", "batch_size"),
        n_particles=lambda w: DATASETS[w.dataset]["report"]["mmd_max_points"],
        image=config["image"],
        seed=config["seed"],
    script:
        "../../scripts/whitening_check.py"
