rule demo_particles:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        star=DEMO_STAR,
        stacks=directory(DEMO_STACKS),
    log:
        f"{DATASET_LOG}/demo_particles.log",
    benchmark:
        f"{DATASET_BENCH}/demo_particles.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **SIMULATOR,
        demo=lambda w: DATASETS[w.dataset]["demo"],
        seed=config["seed"],
    script:
        "../../scripts/demo_particles.py"


rule particle_noise:
    input:
        star=dataset_star,
        stacks=noise_stacks,
    output:
        noise=f"{DATASET_DIR}/particles/noise_power.tsv",
    log:
        f"{DATASET_LOG}/particle_noise.log",
    benchmark:
        f"{DATASET_BENCH}/particle_noise.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        source=source_settings,
        particles=dataset_section(
            "particles", "mask_radius_A", "noise_images", "chunk_size"
        ),
        image=config["image"],
        seed=config["seed"],
    script:
        "../../scripts/particle_noise.py"


rule particles:
    input:
        star=dataset_star,
        stacks=shard_stacks,
        noise=rules.particle_noise.output.noise,
    output:
        stack=f"{DATASET_DIR}/particles/shard{{shard}}.mrcs",
        star=f"{DATASET_DIR}/particles/shard{{shard}}.star",
    log:
        f"{DATASET_LOG}/particles/shard{{shard}}.log",
    benchmark:
        f"{DATASET_BENCH}/particles/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=12 * 60,
    params:
        source=source_settings,
        shards=lambda w: n_shards(w.dataset),
        particles=dataset_section("particles", "whiten", "chunk_size"),
        image=config["image"],
    script:
        "../../scripts/particles.py"
