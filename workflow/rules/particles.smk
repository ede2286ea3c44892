rule demo_particles:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        star=f"{RESULTS}/demo/Extract/job007/particles.star",
        stacks=directory(f"{RESULTS}/demo/Extract/job007/Movies"),
    log:
        f"{LOGS}/demo_particles.log",
    benchmark:
        f"{BENCH}/demo_particles.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        config=config,
    script:
        "../../scripts/demo_particles.py"


rule particle_noise:
    input:
        star=particles_star(),
    output:
        noise=f"{RESULTS}/particles/noise_power.tsv",
    log:
        f"{LOGS}/particle_noise.log",
    benchmark:
        f"{BENCH}/particle_noise.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        particles=config["particles"],
        image=config["image"],
        seed=config["seed"],
    script:
        "../../scripts/particle_noise.py"


rule particles:
    input:
        star=particles_star(),
        noise=rules.particle_noise.output.noise,
    output:
        stack=f"{RESULTS}/particles/shard{{shard}}.mrcs",
        star=f"{RESULTS}/particles/shard{{shard}}.star",
    log:
        f"{LOGS}/particles/shard{{shard}}.log",
    benchmark:
        f"{BENCH}/particles/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=12 * 60,
    params:
        particles=config["particles"],
        image=config["image"],
    script:
        "../../scripts/particles.py"
