# Stage `evaluate` (lfr/evaluate.py): lm-evaluation-harness on each run and reference model.
# -------------------------------------------------------------------------------------------


rule evaluate:
    input:
        model=f"{GRID_RUN}/model",
        tasks=rules.eval_tasks.output,
    output:
        json=f"{DATA}/eval/{{size}}/{{method}}/seed{{seed}}/results.json",
        parquet=f"{DATA}/eval/{{size}}/{{method}}/seed{{seed}}/results.parquet",
    log:
        f"{DATA}/logs/evaluate/{{size}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{DATA}/benchmarks/evaluate/{{size}}/{{method}}/seed{{seed}}.tsv"
    params:
        config=stage_config("eval", exclude=["eval.references", "eval.reference_tokens"]),  # adding one: no rerun
    threads: 1  # as train (train.smk)
    resources:
        **cluster_resources("evaluate"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Evaluating {wildcards.size}/{wildcards.method}/seed{wildcards.seed} with lm-eval."
    shell:
        "python -m lfr evaluate --config-json {params.config:q} --model {input.model} "
        "--tasks {input.tasks} --size {wildcards.size} --method {wildcards.method} "
        "--seed {wildcards.seed} --out-json {output.json} --out-parquet {output.parquet} "
        "--threads {threads} > {log} 2>&1"


rule evaluate_reference:
    input:
        tasks=rules.eval_tasks.output,
    output:
        json=f"{DATA}/eval/reference/{{reference}}/results.json",
        parquet=f"{DATA}/eval/reference/{{reference}}/results.parquet",
    log:
        f"{DATA}/logs/evaluate/reference/{{reference}}.log",
    params:
        config=stage_config("eval", exclude=["eval.references", "eval.reference_tokens"]),
        model=reference_model,
    threads: 1  # as train (train.smk)
    resources:
        **cluster_resources("evaluate_reference"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Evaluating the reference model {params.model} with lm-eval."
    shell:
        "python -m lfr evaluate --config-json {params.config:q} --model {params.model} "
        "--tasks {input.tasks} --size {params.model} --method reference --seed -1 "
        "--out-json {output.json} --out-parquet {output.parquet} --threads {threads} > {log} 2>&1"
