# Tables and figures from the finished runs and evaluations.
# -------------------------------------------------------------------------------------------


rule main_table:
    input:
        runs=expand("{run}/run.json", run=all_runs()),
        evals=all_evals(),
        forgetting=rules.forgetting.output.forgetting if CFG.profiled_runs() else [],
    output:
        main=report(
            f"{TABLES}/main.csv",
            caption="../report/main_table.rst",
            category="Tables",
        ),
        by_seed=report(
            f"{TABLES}/main_by_seed.csv",
            caption="../report/main_by_seed.rst",
            category="Tables",
        ),
    log:
        f"{SET_LOGS}/main_table.log",
    params:
        runs=all_runs(),
        forgetting=lambda wildcards, input: f"--forgetting {input.forgetting}" if input.forgetting else "",
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Writing the main tables."
    shell:
        "python -m lfr summarize --runs {params.runs} --evals {input.evals} {params.forgetting} "
        "--out {output.main} > {log} 2>&1"


rule plot_curves:
    input:
        expand("{run}/metrics.parquet", run=all_runs()),
    output:
        png=report(
            f"{FIGURES}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/{{figure}}.pdf",
    log:
        f"{SET_LOGS}/plot/{{figure}}.log",
    params:
        runs=all_runs(),
    wildcard_constraints:
        figure="val_loss|lfr_phases",
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Drawing {output.png}."
    shell:
        "python -m lfr plot --figure {wildcards.figure} --runs {params.runs} "
        "--out {output.png} > {log} 2>&1"


rule plot_table:
    input:
        main=rules.main_table.output.main,
    output:
        png=report(
            f"{FIGURES}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Figures",
        ),
        pdf=f"{FIGURES}/{{figure}}.pdf",
    log:
        f"{SET_LOGS}/plot/{{figure}}.log",
    params:
        runs=all_runs(),
    wildcard_constraints:
        figure="speedup|downstream",
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Drawing {output.png}."
    shell:
        "python -m lfr plot --figure {wildcards.figure} --runs {params.runs} --main {input.main} "
        "--out {output.png} > {log} 2>&1"
