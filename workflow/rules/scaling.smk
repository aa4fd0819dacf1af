# Stage `scaling` (lfr/report/scaling.py): the speed-up's trend across model sizes, from the
# per-run table, and the learning-rate check.
# -------------------------------------------------------------------------------------------


rule scaling:
    input:
        by_seed=rules.summarize.output.by_seed,
        forgetting=rules.forgetting.output.forgetting if profiled_runs() else [],
    output:
        scaling=report(
            f"{TABLES}/scaling.csv",
            caption="../report/scaling.rst",
            category="Tables",
        ),
        learning_rates=report(
            f"{TABLES}/learning_rates.csv",
            caption="../report/learning_rates.rst",
            category="Tables",
        ),
        band=f"{TABLES}/scaling_band.csv",
    log:
        f"{SET_LOGS}/scaling.log",
    params:
        forgetting=lambda wildcards, input: f"--forgetting {input.forgetting}" if input.forgetting else "",
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Writing the speed-up's trend across sizes and the learning-rate check."
    shell:
        "python -m lfr scaling --by-seed {input.by_seed} {params.forgetting} --out {output.scaling} "
        "> {log} 2>&1"
