# The perplexity-profiling pass and the forgetting / domain analysis of the runs that the
# config's `profile:` section selects.
# -------------------------------------------------------------------------------------------

PROFILE_FIGURES = [
    "profile_distribution",
    "forgetting_examples",
    "forgetting",
    "kept_domains",
    "domain_loss",
]


rule profile:
    input:
        snapshots=rules.train.output.snapshots,
        run=rules.train.output.run,
        meta=rules.tokenize.output.meta,
    output:
        losses="results/profiles/{size}/{method}/seed{seed}/losses.parquet",
        summary="results/profiles/{size}/{method}/seed{seed}/summary.json",
    log:
        "results/logs/profile/{size}/{method}/seed{seed}.log",
    benchmark:
        "results/benchmarks/profile/{size}/{method}/seed{seed}.tsv"
    params:
        config=config_keys("profile", "sample_blocks", "sample_seed", "batch_size"),
        run_dir=subpath(input.run, parent=True),
        data_dir=subpath(input.meta, parent=True),
        out_dir=subpath(output.summary, parent=True),
    threads: 1  # as train (train.smk)
    resources:
        gpu=lambda wildcards: min(1, train_gpus(wildcards)),
    conda:
        "../envs/lfr.yaml"
    message:
        "--- Profiling {wildcards.size}/{wildcards.method}/seed{wildcards.seed}."
    shell:
        "python -m lfr profile --config-json {params.config:q} --run {params.run_dir} "
        "--data {params.data_dir} --out {params.out_dir} --threads {threads} > {log} 2>&1"


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
        "--out-domains {output.domains} --out-kept {output.kept} > {log} 2>&1"


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
