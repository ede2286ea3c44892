REPORT_FIGURES = {
    "posterior_histograms": "Posterior means and the 2-D histogram of posterior samples per particle.",
    "latent_umap": "UMAP of latents: simulated vs experimental, experimental coloured by posterior width, "
    "with particles from distinct regions of the map.",
    "whitening_mmd": "MMD between simulated and experimental latents, whitened and raw particles side by side.",
    "calibration": "Calibration on held-out simulations: nominal vs empirical coverage, accuracy.",
    "example_particles": "Example particles with their posteriors.",
    "ensemble": "The template ensemble: θ per template and the pairwise RMSD matrix.",
}


rule report:
    input:
        posterior=rules.gather_posteriors.output.npz,
        star=rules.gather_posteriors.output.star,
        stacks=expand(rules.particles.output.stack, shard=SHARDS),
        whitening=rules.whitening_check.output.npz,
        simulations=rules.validate.output.npz,
        templates=rules.templates.output.table,
        ensemble=rules.templates.output.ensemble,
    output:
        summary=f"{RESULTS}/report/summary.json",
        figures=[
            report(
                f"{RESULTS}/report/{name}.png",
                caption="../report/figure.rst",
                category="Results",
                labels={"figure": name},
            )
            for name in REPORT_FIGURES
        ],
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCH}/report.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        report=config["report"],
        seed=config["seed"],
        figures=list(REPORT_FIGURES),
    script:
        "../../scripts/report.py"
