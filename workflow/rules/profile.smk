# Stage `profile` (lfr/profile.py): per-block losses at each weight snapshot of the runs that
# the config's `profile:` section selects.
# -------------------------------------------------------------------------------------------


rule profile:
    input:
        snapshots=f"{GRID_RUN}/snapshots",
        run=f"{GRID_RUN}/run.json",
        meta=rules.tokenize.output.meta,
    output:
        losses=f"{DATA}/profiles/{{size}}/{{method}}/seed{{seed}}/losses.parquet",
        summary=f"{DATA}/profiles/{{size}}/{{method}}/seed{{seed}}/summary.json",
    log:
        f"{DATA}/logs/profile/{{size}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{DATA}/benchmarks/profile/{{size}}/{{method}}/seed{{seed}}.tsv"
    params:
        config=config_keys("profile", "sample_blocks", "sample_seed", "batch_size",
                           train=("device", "dtype")),  # the device and autocast of training
        run_dir=subpath(input.run, parent=True),
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.summary, parent=True),
    threads: 1  # as train (train.smk)
    resources:
        gpu=profile_gpus,  # a GPU where the run trained on one
        **cluster_resources("profile", profile_gpus),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Profiling {wildcards.size}/{wildcards.method}/seed{wildcards.seed}."
    shell:
        "python -m lfr profile --config-json {params.config:q} --run {params.run_dir} "
        "--data {params.data_dir} --out {params.out_dir} --threads {threads} > {log} 2>&1"
