# Corpus documents -> tokenizer -> token files and block tables.
# -------------------------------------------------------------------------------------------


rule corpus:
    input:
        corpus_inputs,
    output:
        train="results/corpus/train.parquet",
        val="results/corpus/val.parquet",
    log:
        "results/logs/corpus.log",
    params:
        config=stage_config("corpus"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Reading the {CFG.corpus.source} corpus and splitting it by document."
    shell:
        "python -m lfr corpus --config-json {params.config:q} "
        "--train-out {output.train} --val-out {output.val} > {log} 2>&1"


rule tokenizer:
    input:
        train=rules.corpus.output.train,
    output:
        directory("results/tokenizer"),
    log:
        "results/logs/tokenizer.log",
    params:
        config=stage_config("corpus", "tokenizer"),  # the tokenizer records what it was built from
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Building the {CFG.tokenizer.kind} tokenizer."
    shell:
        "python -m lfr tokenizer --config-json {params.config:q} "
        "--train-docs {input.train} --out {output} > {log} 2>&1"


rule tokenize:
    input:
        train=rules.corpus.output.train,
        val=rules.corpus.output.val,
        tokenizer=rules.tokenizer.output,
    output:
        train="results/data/train.bin",
        val="results/data/val.bin",
        train_blocks="results/data/train_blocks.parquet",
        val_blocks="results/data/val_blocks.parquet",
        meta="results/data/meta.json",
    log:
        "results/logs/tokenize.log",
    params:
        config=stage_config("corpus", "tokenizer", "data"),  # likewise, in meta.json
        out_dir=subpath(output.meta, parent=True),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Tokenizing both splits into blocks of {CFG.data.block_size} tokens."
    shell:
        "python -m lfr tokenize --config-json {params.config:q} --train-docs {input.train} "
        "--val-docs {input.val} --tokenizer {input.tokenizer} --out {params.out_dir} > {log} 2>&1"
