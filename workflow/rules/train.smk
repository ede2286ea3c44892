# the simulator's settings as the rules that build it read them
SIMULATOR = {key: config[key] for key in ("image", "simulator")}
# the train section as the train rule's params (keys added later left out at their default)
TRAIN = configuration.train_params(config["train"])


rule priors:
    input:
        unpack(priors_inputs),
    output:
        priors=f"{MODEL_DIR}/model/priors.json",
    log:
        f"{MODEL_LOG}/priors.log",
    benchmark:
        f"{MODEL_BENCH}/priors.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        simulator=config["simulator"],
        image=config["image"],
        pixel_size_A=lambda w: (
            DATASETS[config["simulator"]["priors_from_dataset"]]["pixel_size_A"]
            if config["simulator"]["priors_from_dataset"]
            else None
        ),
    script:
        "../../scripts/priors.py"


rule train:
    input:
        unpack(simulator_inputs),
    output:
        model=f"{MODEL_DIR}/model/posterior.pt",
        last_model=f"{MODEL_DIR}/model/posterior_last.pt",
        card=f"{MODEL_DIR}/model/card.json",
        history=f"{MODEL_DIR}/model/training.tsv",
        curve=report(
            f"{MODEL_DIR}/model/loss.png",
            caption="../report/loss.rst",
            category="Training",
        ),
    log:
        f"{MODEL_LOG}/train.log",
    benchmark:
        f"{MODEL_BENCH}/train.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        mem_mb=16000,
        runtime=cluster.train_runtime_min(config["train"]["max_hours"]),
        # per node (--gres), as torchrun starts train.gpus ranks on each; none for a CPU training
        gres=cluster.gpus_per_node(config["train"]["device"], config["train"]["gpus"]),
        # SLURM: one task per node (its torchrun starts the node's ranks); no --ntasks-per-gpu
        nodes=config["train"]["nodes"],
        tasks=config["train"]["nodes"],
        tasks_per_gpu=0,
    params:
        **SIMULATOR,
        seed=config["seed"],
        train=TRAIN,
        model_name=MODEL,
        recipe=TEMPLATE_RECIPE,
        card_config={
            key: config[key]
            for key in ("structure", "templates", "image", "simulator")
        },
        checkpoint=f"{MODEL_DIR}/checkpoints/train.pt",
    script:
        "../../scripts/train.py"


rule validate:
    input:
        unpack(simulator_inputs),
        model=model_file(),
    output:
        npz=f"{MODEL_DIR}/validation/simulations.npz",
    log:
        f"{MODEL_LOG}/validate.log",
    benchmark:
        f"{MODEL_BENCH}/validate.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=cluster.gpu_if_cuda(config["validation"]["device"]),
        mem_mb=8000,
        runtime=60,
    params:
        **SIMULATOR,
        validation={k: v for k, v in config["validation"].items() if k != "likelihood"},
        seed=config["seed"],
    script:
        "../../scripts/validate.py"


rule likelihood_reference:
    input:
        unpack(simulator_inputs),
        model=model_file(),
    output:
        npz=f"{MODEL_DIR}/validation/likelihood.npz",
    log:
        f"{MODEL_LOG}/likelihood_reference.log",
    benchmark:
        f"{MODEL_BENCH}/likelihood_reference.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: all_cores()
    resources:
        gpu=cluster.gpu_if_cuda(config["validation"]["device"]),
        mem_mb=lambda w: int(
            1024 * config["validation"]["likelihood"]["max_memory_gb"]
        )
        + 2000,
        runtime=240,
    params:
        **SIMULATOR,
        validation={
            key: config["validation"][key]
            for key in (
                "fixed_snr",
                "n_fixed_snr",
                "grid_points",
                "n_samples",
                "device",
                "likelihood",
            )
        },
        seed=config["seed"],
    script:
        "../../scripts/likelihood_reference.py"


rule model_report:
    input:
        unpack(likelihood_reference_input),
        simulations=rules.validate.output.npz,
        ensemble=rules.templates.output.ensemble,
        card=model_card(),
    output:
        summary=f"{MODEL_DIR}/report/validation.json",
        calibration=report(
            f"{MODEL_DIR}/report/calibration.png",
            caption="../report/figure.rst",
            category="Model",
            labels={"figure": "calibration"},
        ),
        ensemble=report(
            f"{MODEL_DIR}/report/ensemble.png",
            caption="../report/figure.rst",
            category="Model",
            labels={"figure": "ensemble"},
        ),
    log:
        f"{MODEL_LOG}/model_report.log",
    benchmark:
        f"{MODEL_BENCH}/model_report.tsv"
    conda:
        "../../envs/analysis.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        seed=config["seed"],
    script:
        "../../scripts/model_report.py"
