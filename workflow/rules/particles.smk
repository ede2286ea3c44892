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


rule particles:
    input:
        star=particles_star(),
    output:
        stack=f"{RESULTS}/particles/preprocessed.mrcs",
        star=f"{RESULTS}/particles/particles.star",
        noise=f"{RESULTS}/particles/noise_power.tsv",
    log:
        f"{LOGS}/particles.log",
    benchmark:
        f"{BENCH}/particles.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=12 * 60,
    params:
        particles=config["particles"],
        image=config["image"],
        seed=config["seed"],
    script:
        "../../scripts/particles.py"
