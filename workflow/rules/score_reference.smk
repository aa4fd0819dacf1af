# Stage `score-reference` (lfr/score_reference.py): the reference model of reference-scored
# methods (ppl-prune, rho-loss), trained on its shard, and its scores of every other block.
# -------------------------------------------------------------------------------------------


rule score_reference:
    input:
        meta=rules.tokenize.output.meta,
        tokens=rules.tokenize.output.train,
        tokenizer=rules.tokenizer.output,
    output:
        scores=f"{SCORES_DIR}/block_scores.parquet",
        info=f"{SCORES_DIR}/reference.json",
        reference=directory(f"{SCORES_DIR}/reference"),
    log:
        f"{DATA}/logs/score_reference/{{method}}/{{ref_size}}/seed{{seed}}.log",
    benchmark:
        f"{DATA}/benchmarks/score_reference/{{method}}/{{ref_size}}/seed{{seed}}.tsv"
    params:
        config=lambda wildcards: run_config(wildcards.ref_size, wildcards.method),
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.info, parent=True),
        resume_dir=f"{DATA}/resume/scores/{{method}}/{{ref_size}}/seed{{seed}}",
    threads: 1  # as train
    resources:
        gpu=reference_gpus,
        runtime=lambda wildcards: grid.size_resources(CFG, wildcards.ref_size).runtime_min,
        mem_mb=lambda wildcards: grid.size_resources(CFG, wildcards.ref_size).mem_mb,
        **cluster_resources("score_reference", reference_gpus),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Training the {wildcards.ref_size} reference model of {wildcards.method} (seed "
        "{wildcards.seed}) and scoring every block."
    shell:
        "python -m lfr score-reference --config-json {params.config:q} --method {wildcards.method} "
        "--seed {wildcards.seed} --data {params.data_dir} --tokenizer {input.tokenizer} "
        "--out {params.out_dir} --resume-dir {params.resume_dir} --threads {threads} > {log} 2>&1 "
        "|| {{ rc=$?; tail -n 1 {log} >&2; exit $rc; }}"
