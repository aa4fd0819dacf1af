# Stage `summarize` (lfr/report/summarize.py): the main tables from the runs and evaluations, and
# summary.md, main.csv in brief (written next to it; `make demo` prints its headline).
# -------------------------------------------------------------------------------------------


rule summarize:
    input:
        runs=expand("{run}/run.json", run=all_runs()),
        evals=all_evals(),
        reference_bpb=all_reference_bpb(),
        forgetting=rules.forgetting.output.forgetting if profiled_runs() else [],
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
        summary=f"{TABLES}/summary.md",
    log:
        f"{SET_LOGS}/summarize.log",
    params:
        runs=all_runs(),
        reference_tokens=json.dumps(CFG.eval.reference_tokens),
        forgetting=lambda wildcards, input: f"--forgetting {input.forgetting}" if input.forgetting else "",
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Writing the main tables."
    shell:
        "python -m lfr summarize --runs {params.runs} --evals {input.evals} {params.forgetting} "
        "--reference-bpb {input.reference_bpb} --reference-tokens {params.reference_tokens:q} "
        "--out {output.main} > {log} 2>&1"
