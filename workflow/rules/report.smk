# Tables and figures from the finished runs.
# -------------------------------------------------------------------------------------------


rule main_table:
    input:
        runs=expand("{run}/run.json", run=all_runs()),
        evals=all_evals(),
    output:
        report(
            "results/tables/main.csv",
            caption="../report/main_table.rst",
            category="Tables",
        ),
    log:
        "results/logs/main_table.log",
    params:
        runs=all_runs(),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Writing the main table."
    shell:
        "python -m lfr summarize --runs {params.runs} --evals {input.evals} --out {output} > {log} 2>&1"


rule plot_val_loss:
    input:
        expand("{run}/metrics.parquet", run=all_runs()),
    output:
        png=report(
            "results/figures/val_loss.png",
            caption="../report/val_loss.rst",
            category="Figures",
        ),
        pdf="results/figures/val_loss.pdf",
    log:
        "results/logs/plot_val_loss.log",
    params:
        runs=all_runs(),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Plotting validation loss against tokens."
    shell:
        "python -m lfr plot --runs {params.runs} --out {output.png} > {log} 2>&1"
