# Stage `tokenizer` (lfr/tokenizer.py): the BPE trained on the train split, or GPT-2's.
# -------------------------------------------------------------------------------------------


rule tokenizer:
    input:
        train=rules.corpus.output.train,
    output:
        directory(f"{DATA}/tokenizer"),
    log:
        f"{DATA}/logs/tokenizer.log",
    params:
        config=stage_config("corpus", "tokenizer"),  # the tokenizer records what it was built from
    resources:
        **cluster_resources("tokenizer"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Building the {CFG.tokenizer.kind} tokenizer."
    shell:
        "python -m lfr tokenizer --config-json {params.config:q} "
        "--train-docs {input.train} --out {output} > {log} 2>&1"
