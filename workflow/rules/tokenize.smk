# Stage `tokenize` (lfr/tokenize.py): both splits into token files and block tables.
# -------------------------------------------------------------------------------------------


rule tokenize:
    input:
        train=rules.corpus.output.train,
        val=rules.corpus.output.val,
        tokenizer=rules.tokenizer.output,
    output:
        train=f"{DATA}/data/train.bin",
        val=f"{DATA}/data/val.bin",
        train_blocks=f"{DATA}/data/train_blocks.parquet",
        val_blocks=f"{DATA}/data/val_blocks.parquet",
        meta=f"{DATA}/data/meta.json",
    log:
        f"{DATA}/logs/tokenize.log",
    params:
        config=stage_config("corpus", "tokenizer", "data"),  # likewise, in meta.json
        format=DATA_FORMAT,  # a new layout of the data folder (lfr/data.py) rebuilds it
        out_dir=subpath(output.meta, parent=True),
    resources:
        **cluster_resources("tokenize"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Tokenizing both splits into blocks of {CFG.data.block_size} tokens."
    shell:
        "python -m lfr tokenize --config-json {params.config:q} --train-docs {input.train} "
        "--val-docs {input.val} --tokenizer {input.tokenizer} --out {params.out_dir} > {log} 2>&1"
