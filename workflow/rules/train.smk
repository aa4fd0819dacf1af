# Stage `train` (lfr/train.py): one job per model size x data-selection method x budget x seed.
# -------------------------------------------------------------------------------------------


rule train:
    input:
        meta=rules.tokenize.output.meta,
        tokens=rules.tokenize.output.train,
        tokenizer=rules.tokenizer.output,
        block_scores=block_scores_input,
    output:
        model=directory(f"{RUNS_DIR}/model"),
        metrics=f"{RUNS_DIR}/metrics.parquet",
        run=f"{RUNS_DIR}/run.json",
        records=directory(f"{RUNS_DIR}/records"),
        snapshots=directory(f"{RUNS_DIR}/snapshots"),
    log:
        f"{DATA}/logs/train/{{size}}/{{method}}/budget{{budget}}{{lr}}/seed{{seed}}.log",
    benchmark:
        f"{DATA}/benchmarks/train/{{size}}/{{method}}/budget{{budget}}{{lr}}/seed{{seed}}.tsv"
    params:
        config=lambda wildcards: run_config(wildcards.size, wildcards.method),
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.run, parent=True),
        resume_dir=f"{DATA}/resume/{{size}}/{{method}}/budget{{budget}}{{lr}}/seed{{seed}}",  # not an output: survives retries
        snapshots=snapshot_arg,
        block_scores=block_scores_arg,
        time_limit=time_limit_arg,
        lr_mult=lambda wildcards: wildcards.lr.removeprefix("-lr") or "1",
    threads: 1  # on a CPU, jobs side by side beat threads (docs/benchmarks.md); SLURM: set-threads
    resources:
        **TRAIN_RESOURCES,  # nodes, GPUs, runtime and memory per size (config resources:)
        **cluster_resources("train", train_gpus),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Training {wildcards.size} with {wildcards.method}, budget {wildcards.budget}{wildcards.lr}, seed {wildcards.seed}."
    shell:
        # lfr.launch runs python, torchrun on one node, or srun with one torchrun per node. On its
        # time limit or SIGTERM the run checkpoints to resume_dir and exits 3 (under torchrun,
        # torchrun's failure status); a retry resumes. A failed job repeats its log's last line
        # (why it stopped, how to go on) in Snakemake's output.
        "python -m lfr.launch {resources.nodes} {resources.node_gpus} {threads} "
        "-m lfr train --config-json {params.config:q} --size {wildcards.size} "
        "--method {wildcards.method} --seed {wildcards.seed} --budget {wildcards.budget} --lr-mult {params.lr_mult} --data {params.data_dir} "
        "--tokenizer {input.tokenizer} --out {params.out_dir} --resume-dir {params.resume_dir} "
        "--threads {threads} {params.time_limit} {params.snapshots} {params.block_scores} "
        "> {log} 2>&1 || {{ rc=$?; tail -n 1 {log} >&2; exit $rc; }}"
