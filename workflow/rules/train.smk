rule priors:
    input:
        unpack(priors_inputs),
    output:
        priors=f"{RESULTS}/model/priors.json",
    log:
        f"{LOGS}/priors.log",
    benchmark:
        f"{BENCH}/priors.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=config,
    script:
        "../../scripts/priors.py"


rule train:
    input:
        unpack(simulator_inputs),
    output:
        model=f"{RESULTS}/model/posterior.pt",
        last_model=f"{RESULTS}/model/posterior_last.pt",
        card=f"{RESULTS}/model/card.json",
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
    threads: all_cores()
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=config["train"]["gpus"],
    params:
        config=config,
        checkpoint=f"{RESULTS}/checkpoints/train.pt",
    script:
        "../../scripts/train.py"
