rule demo_micrographs:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        star=MDEMO_STAR,
        micrographs=directory(MDEMO_MICROGRAPHS),
        truth=MDEMO_TRUTH,
    log:
        f"{GLOG}/demo_micrographs.log",
    benchmark:
        f"{GBENCH}/demo_micrographs.tsv"
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
        maps=directory(f"{G}/picks/shard{{shard}}"),
        table=f"{G}/picks/shard{{shard}}.tsv",
        stats=f"{G}/picks/shard{{shard}}.json",
    log:
        f"{GLOG}/pick/shard{{shard}}.log",
    benchmark:
        f"{GBENCH}/pick/shard{{shard}}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=8000,
        runtime=12 * 60,
        gpu=lambda w: MICROGRAPH_SETS[w.mset]["picking"]["gpus"],
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
        candidates=f"{G}/candidates.star",
        coordinates=f"{G}/coordinates.star",
        summary=f"{G}/report/summary.json",
        figure=report(
            f"{G}/report/micrograph.png",
            caption="../report/micrograph.rst",
            category="Micrographs",
            subcategory="{mset}",
            labels={"figure": "micrograph"},
        ),
    log:
        f"{GLOG}/micrograph_report.log",
    benchmark:
        f"{GBENCH}/micrograph_report.tsv"
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
