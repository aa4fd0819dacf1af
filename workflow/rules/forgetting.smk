# Stage `forgetting` (lfr/report/forgetting.py): learned / forgotten / unlearned blocks per run
# and domain, from the profiles; the figures read its tables.
# -------------------------------------------------------------------------------------------


rule forgetting:
    input:
        profiles=expand("{profile}/losses.parquet", profile=profile_dirs()),
        records=expand("{run}/records", run=profiled_runs()),
        meta=rules.tokenize.output.meta,
    output:
        forgetting=report(
            f"{TABLES}/forgetting.csv",
            caption="../report/forgetting.rst",
            category="Tables",
        ),
        domains=report(
            f"{TABLES}/domains.csv",
            caption="../report/domains.rst",
            category="Tables",
        ),
        kept=report(
            f"{TABLES}/kept_domains.csv",
            caption="../report/kept_domains.rst",
            category="Tables",
        ),
        blocks=report(
            f"{TABLES}/forgetting_blocks.parquet",
            caption="../report/forgetting_blocks.rst",
            category="Tables",
        ),
    log:
        f"{SET_LOGS}/forgetting.log",
    params:
        config=config_keys("profile", "threshold_nats", "threshold_sd"),
        profiles=profile_dirs(),
        runs=profiled_runs(),
        data_dir=subpath(input.meta, parent=True),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Classifying block trajectories (learned / forgotten / unlearned) per run and domain."
    shell:
        "python -m lfr forgetting --config-json {params.config:q} --profiles {params.profiles} "
        "--runs {params.runs} --data {params.data_dir} --out-forgetting {output.forgetting} "
        "--out-domains {output.domains} --out-kept {output.kept} --out-blocks {output.blocks} "
        "> {log} 2>&1"
