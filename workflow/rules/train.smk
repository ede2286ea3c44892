rule train:
    input:
        ensemble=rules.templates.output.ensemble,
    output:
        model=f"{RESULTS}/model/posterior.pt",
        history=f"{RESULTS}/model/training.tsv",
        curve=report(
            f"{RESULTS}/model/loss.png",
            caption="../report/loss.rst",
            category="Training",
        ),
    log:
        f"{LOGS}/train.log",
    benchmark:
        f"{BENCH}/train.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=config["train"]["gpus"],
    params:
        config=config,
        checkpoint=f"{RESULTS}/checkpoints/train.pt",
    script:
        "../../scripts/train.py"
