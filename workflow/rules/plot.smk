# Stage `plot` (lfr/report/plot.py): one figure per job. The registry FIGURES there says what each
# figure reads; a job waits for, and reruns after, only those files.
# -------------------------------------------------------------------------------------------
from lfr.report import plot as lfr_plot  # light: no matplotlib until a figure is drawn

# What a figure can read (lfr_plot.READS): its files here, and the `plot` option naming them.
PLOT_FILES = {
    "runs": expand("{run}/metrics.parquet", run=all_runs()),
    "main": rules.summarize.output.main,
    "profiles": expand("{profile}/losses.parquet", profile=profile_dirs()),
    "tables": list(rules.forgetting.output),
    "scaling": [rules.scaling.output.scaling, rules.scaling.output.band],
}
PLOT_ARGS = {
    "runs": ["--runs", *all_runs()],
    "main": ["--main", rules.summarize.output.main],
    "profiles": ["--profiles", *profile_dirs()],
    "tables": ["--tables", TABLES],
    "scaling": ["--scaling", rules.scaling.output.scaling],
}
# Per figure: the files it reads (named by what they are) and its `plot` options for them.
PLOT_INPUT = {
    name: {kind: PLOT_FILES[kind] for kind in figure.reads}
    for name, figure in lfr_plot.FIGURES.items()
}
PLOT_OPTIONS = {
    name: " ".join(arg for kind in figure.reads for arg in PLOT_ARGS[kind])
    for name, figure in lfr_plot.FIGURES.items()
}


rule plot:
    input:
        unpack(lambda wildcards: PLOT_INPUT[wildcards.figure]),
    output:
        png=report(
            f"{FIGURES}/{{figure}}.png",
            caption="../report/figure.rst",
            category=lambda wildcards: lfr_plot.FIGURES[wildcards.figure].category,
        ),
        pdf=f"{FIGURES}/{{figure}}.pdf",
    log:
        f"{SET_LOGS}/plot/{{figure}}.log",
    params:
        options=lambda wildcards: PLOT_OPTIONS[wildcards.figure],
    wildcard_constraints:
        figure=alternation(lfr_plot.FIGURES),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Drawing {output.png}."
    shell:
        "python -m lfr plot --figure {wildcards.figure} {params.options} --out {output.png} > {log} 2>&1"
