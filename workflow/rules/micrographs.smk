rule demo_micrographs:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        star=MSET_DEMO_STAR,
        micrographs=directory(MSET_DEMO_MICROGRAPHS),
        truth=MSET_DEMO_TRUTH,
    log:
        f"{MSET_LOG}/demo_micrographs.log",
    benchmark:
        f"{MSET_BENCH}/demo_micrographs.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        **SIMULATOR,
        demo=lambda w: MICROGRAPH_SETS[w.mset]["demo"],
        seed=config["seed"],
    script:
        "../../scripts/demo_micrographs.py"


rule pick:
    input:
        model=model_file(),
        card=model_card(),
        reference=rules.validate.output.npz,
        star=micrograph_star,
        micrographs=shard_micrographs,
    output:
        maps=directory(f"{MSET_DIR}/picks/shard{{shard}}"),
        table=f"{MSET_DIR}/picks/shard{{shard}}.tsv",
        stats=f"{MSET_DIR}/picks/shard{{shard}}.json",
    log:
        f"{MSET_LOG}/pick/shard{{shard}}.log",
    benchmark:
        f"{MSET_BENCH}/pick/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=lambda w: cluster.job_gpus(
            MICROGRAPH_SETS[w.mset]["picking"]["device"],
            MICROGRAPH_SETS[w.mset]["picking"]["gpus"],
        ),
    params:
        mset=micrograph_params,
        image=config["image"],
        mask_radius_A=config["simulator"]["mask_radius_A"],
        optics={
            key: config["simulator"][key]
            for key in ("voltage_kV", "cs_mm", "amplitude_contrast")
        },
        seed=config["seed"],
    script:
        "../../scripts/pick.py"


rule micrograph_report:
    input:
        tables=lambda w: expand(
            rules.pick.output.table, mset=w.mset, shard=micrograph_shard_ids(w.mset)
        ),
        stats=lambda w: expand(
            rules.pick.output.stats, mset=w.mset, shard=micrograph_shard_ids(w.mset)
        ),
        maps=lambda w: expand(
            rules.pick.output.maps, mset=w.mset, shard=micrograph_shard_ids(w.mset)
        ),
        truth=micrograph_truth,
        card=model_card(),
    output:
        candidates=f"{MSET_DIR}/candidates.star",
        coordinates=f"{MSET_DIR}/coordinates.star",
        summary=f"{MSET_DIR}/report/summary.json",
        figure=report(
            f"{MSET_DIR}/report/micrograph.png",
            caption="../report/micrograph.rst",
            category="Micrographs",
            subcategory="{mset}",
            labels={"figure": "micrograph"},
        ),
    log:
        f"{MSET_LOG}/micrograph_report.log",
    benchmark:
        f"{MSET_BENCH}/micrograph_report.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        mset=micrograph_params,
        mask_radius_A=config["simulator"]["mask_radius_A"],
    script:
        "../../scripts/micrograph_report.py"
