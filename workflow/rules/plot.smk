# Stage `plot` (lfr/report/figures.py, lfr/report/profile_figures.py): one figure per job.
# -------------------------------------------------------------------------------------------

PROFILE_FIGURES = [
    "profile_distribution",
    "forgetting_examples",
    "forgetting",
    "kept_domains",
    "domain_loss",
]


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
        main=rules.summarize.output.main,
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


rule plot_profile:
    input:
        profiles=expand("{profile}/losses.parquet", profile=profile_dirs()),
        forgetting=rules.forgetting.output.forgetting,
        domains=rules.forgetting.output.domains,
        kept=rules.forgetting.output.kept,
    output:
        png=report(
            f"{FIGURES}/{{figure}}.png",
            caption="../report/figure.rst",
            category="Profiling",
        ),
        pdf=f"{FIGURES}/{{figure}}.pdf",
    log:
        f"{SET_LOGS}/plot/{{figure}}.log",
    params:
        profiles=profile_dirs(),
        tables=subpath(input.forgetting, parent=True),
    wildcard_constraints:
        figure="|".join(PROFILE_FIGURES),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Drawing {output.png}."
    shell:
        "python -m lfr plot-profile --figure {wildcards.figure} --profiles {params.profiles} "
        "--tables {params.tables} --out {output.png} > {log} 2>&1"
