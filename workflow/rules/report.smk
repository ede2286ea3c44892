REPORT_FIGURES = {
    "posterior_histograms": "Posterior means and the 2-D histogram of posterior samples per particle.",
    "latent_umap": "UMAP of latents: simulated vs experimental, experimental coloured by posterior width, "
    "with particles from distinct regions of the map.",
    "whitening_mmd": "MMD between simulated and experimental latents, whitened and raw particles side by side.",
    "example_particles": "Example particles with their posteriors.",
}


rule report:
    input:
        posterior=rules.gather_posteriors.output.npz,
        star=rules.gather_posteriors.output.star,
        stacks=lambda w: expand(
            rules.particles.output.stack, dataset=w.dataset, shard=shard_ids(w.dataset)
        ),
        whitening=rules.whitening_check.output.npz,
        simulations=rules.validate.output.npz,
        validation=rules.model_report.output.summary,
        populations=f"{DATASET_DIR}/populations/populations.json",
        predictive=f"{DATASET_DIR}/report/predictive.json",
        card=model_card(),
    output:
        summary=f"{DATASET_DIR}/report/summary.json",
        figures=[
            report(
                f"{DATASET_DIR}/report/{name}.png",
                caption="../report/figure.rst",
                category="{dataset}",
                labels={"figure": name},
            )
            for name in REPORT_FIGURES
        ],
    log:
        f"{DATASET_LOG}/report.log",
    benchmark:
        f"{DATASET_BENCH}/report.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        report=dataset_section(
            "report",
            "mmd_permutations",
            "mmd_max_points",
            "umap_neighbors",
            "n_example_particles",
        ),
        seed=config["seed"],
        model=MODEL,
        figures=list(REPORT_FIGURES),
    script:
        "../../scripts/report.py"


rule populations:
    input:
        posterior=rules.gather_posteriors.output.npz,
        star=rules.gather_posteriors.output.star,
    output:
        summary=f"{DATASET_DIR}/populations/populations.json",
        table=f"{DATASET_DIR}/populations/population.tsv",
        figure=report(
            f"{DATASET_DIR}/populations/populations.png",
            caption="../report/figure.rst",
            category="{dataset}",
            labels={"figure": "populations"},
        ),
        states=directory(f"{DATASET_DIR}/populations/states"),
    log:
        f"{DATASET_LOG}/populations.log",
    benchmark:
        f"{DATASET_BENCH}/populations.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        report=dataset_section(
            "report",
            "population_bins",
            "population_bootstrap",
            "states",
            "state_min_mass",
        ),
        seed=config["seed"],
        # a cryoSPARC export: the state subsets as .cs files too
        cryosparc=lambda w: (
            DATASETS[w.dataset]["star"] if w.dataset in cryosparc_datasets() else None
        ),
    script:
        "../../scripts/populations.py"


rule likelihood_agreement:
    input:
        unpack(simulator_inputs),
        model=model_file(),
        star=rules.gather_posteriors.output.star,
        posterior=rules.gather_posteriors.output.npz,
        stacks=lambda w: expand(
            rules.particles.output.stack, dataset=w.dataset, shard=shard_ids(w.dataset)
        ),
    output:
        summary=f"{DATASET_DIR}/report/likelihood.json",
        npz=f"{DATASET_DIR}/report/likelihood.npz",
    log:
        f"{DATASET_LOG}/likelihood_agreement.log",
    benchmark:
        f"{DATASET_BENCH}/likelihood_agreement.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=lambda w: cluster.gpu_if_cuda(DATASETS[w.dataset]["inference"]["device"]),
        # the grids' estimate (an upper bound) is at most max_memory_gb, refused at -n beyond
        mem_mb=lambda w: int(
            1024 * DATASETS[w.dataset]["report"]["likelihood"]["max_memory_gb"]
        )
        + 2000,
        runtime=240,
    params:
        **SIMULATOR,
        likelihood=dataset_section("report", "likelihood"),
        inference=dataset_section("inference", "device", "grid_points"),
        seed=config["seed"],
    script:
        "../../scripts/likelihood_agreement.py"


rule predictive_check:
    input:
        unpack(simulator_inputs),
        model=model_file(),
        posterior=rules.gather_posteriors.output.npz,
        star=rules.gather_posteriors.output.star,
        stacks=lambda w: expand(
            rules.particles.output.stack, dataset=w.dataset, shard=shard_ids(w.dataset)
        ),
        noise=rules.particle_noise.output.noise,
    output:
        summary=f"{DATASET_DIR}/report/predictive.json",
        npz=f"{DATASET_DIR}/report/predictive.npz",
    log:
        f"{DATASET_LOG}/predictive_check.log",
    benchmark:
        f"{DATASET_BENCH}/predictive_check.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=lambda w: cluster.gpu_if_cuda(DATASETS[w.dataset]["inference"]["device"]),
        mem_mb=8000,
        runtime=60,
    params:
        **SIMULATOR,
        report=dataset_section("report", "mmd_max_points", "mmd_permutations"),
        inference=dataset_section("inference", "device", "batch_size"),
        particles=dataset_section("particles", "whiten", "mask_radius_A"),
        seed=config["seed"],
    script:
        "../../scripts/predictive_check.py"
