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
        card=model_card(),
    output:
        summary=f"{D}/report/summary.json",
        figures=[
            report(
                f"{D}/report/{name}.png",
                caption="../report/figure.rst",
                category="{dataset}",
                labels={"figure": name},
            )
            for name in REPORT_FIGURES
        ],
    log:
        f"{DLOG}/report.log",
    benchmark:
        f"{DBENCH}/report.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        report=dataset_section("report"),
        seed=config["seed"],
        model=MODEL,
        figures=list(REPORT_FIGURES),
    script:
        "../../scripts/report.py"
