# Stage `corpus` (lfr/corpus.py): the corpus documents, split into train and val by document.
# -------------------------------------------------------------------------------------------


rule corpus:
    input:
        corpus_inputs,
    output:
        train=f"{DATA}/corpus/train.parquet",
        val=f"{DATA}/corpus/val.parquet",
    log:
        f"{DATA}/logs/corpus.log",
    params:
        config=stage_config("corpus"),
    resources:
        **cluster_resources("corpus"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Reading the {CFG.corpus.source} corpus and splitting it by document."
    shell:
        "python -m lfr corpus --config-json {params.config:q} "
        "--train-out {output.train} --val-out {output.val} > {log} 2>&1"
