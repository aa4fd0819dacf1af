# Stage `eval-tasks` (lfr/eval_tasks.py): the offline lm-eval tasks from held-out documents.
# -------------------------------------------------------------------------------------------


rule eval_tasks:
    input:
        val=rules.corpus.output.val,
        tokenizer=rules.tokenizer.output,
    output:
        directory(f"{DATA}/eval_tasks"),
    log:
        f"{DATA}/logs/eval_tasks.log",
    params:
        config=stage_config("eval", "data", exclude=["eval.references", "eval.reference_tokens"]),
    resources:
        **cluster_resources("eval_tasks"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Building the offline eval tasks from held-out documents."
    shell:
        "python -m lfr eval-tasks --config-json {params.config:q} --val-docs {input.val} "
        "--tokenizer {input.tokenizer} --out {output} > {log} 2>&1"
