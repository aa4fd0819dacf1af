# LFR reproduction: corpus -> tokenizer -> tokens -> pretraining (size x method x seed) -> tables.
#
#   snakemake --cores all results/tables/main.csv                                 # CPU demo
#   snakemake --cores all results/smoke/tables/main.csv --configfile config/smoke.yaml
# (the target goes first: --configfile takes several values). A config with a `name` writes its
# tables and figures to results/<name>/.
#
# Every rule calls one `python -m lfr <stage>`; the library does the work (see docs/pipeline.md).

from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless --configfile names a whole config (then it alone is used, so a
# paper-scale run never inherits demo settings). Found next to this Snakefile, so that
# `--directory DIR` works too.
if not workflow.config_settings.configfiles:

    configfile: f"{workflow.basedir}/config/config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/tokenize.smk"
include: "workflow/rules/score_reference.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval_tasks.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/reference_bpb.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/forgetting.smk"
include: "workflow/rules/summarize.smk"
include: "workflow/rules/scaling.smk"
include: "workflow/rules/plot.smk"


localrules:
    all,
    prefetch,
    summarize,
    scaling,
    forgetting,
    plot,


rule all:
    default_target: True
    input:
        rules.summarize.output,
        rules.scaling.output,
        rules.forgetting.output if profiled_runs() else [],
        expand(
            f"{FIGURES}/{{figure}}.{{ext}}",
            figure=[
                name
                for name, figure in lfr_plot.FIGURES.items()
                if profiled_runs() or not figure.profiling
            ],
            ext=["png", "pdf"],
        ),
