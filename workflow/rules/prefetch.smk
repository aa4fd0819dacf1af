# Stage `prefetch` (lfr/prefetch.py): the standard eval tasks' datasets and reference models,
# downloaded on a networked node (not part of `all`).
# -------------------------------------------------------------------------------------------


rule prefetch:
    output:
        touch("resources/hf_cache/.prefetched"),
    log:
        "results/logs/prefetch.log",
    params:
        config=stage_config("eval"),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Downloading the datasets of the standard eval tasks (run on a networked node)."
    shell:
        "python -m lfr prefetch --config-json {params.config:q} > {log} 2>&1"
