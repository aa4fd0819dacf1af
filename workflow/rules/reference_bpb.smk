# Stage `reference-bpb` (lfr/reference_bpb.py): each released reference model's val_bpb on the
# text of the validation blocks, with its own tokenizer.
# -------------------------------------------------------------------------------------------


rule reference_bpb:
    input:
        meta=rules.tokenize.output.meta,
        val=rules.tokenize.output.val,
        tokenizer=rules.tokenizer.output,
    output:
        f"{DATA}/eval/reference/{{reference}}/val_bpb.json",
    log:
        f"{DATA}/logs/reference_bpb/{{reference}}.log",
    params:
        config=config_keys("eval", "device", "cache_dir", train=("eval_blocks",)),  # the subset
        model=reference_model,
        data_dir=subpath(input.meta, parent=True),
    threads: 1  # as train (train.smk)
    resources:
        **cluster_resources("reference_bpb"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Measuring the bits per byte of the reference model {params.model}."
    shell:
        "python -m lfr reference-bpb --config-json {params.config:q} --model {params.model} "
        "--data {params.data_dir} --tokenizer {input.tokenizer} --out {output} "
        "--threads {threads} > {log} 2>&1"
