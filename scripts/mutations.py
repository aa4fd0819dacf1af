"""Show that the tests catch what they claim to: apply one-line mutations of the code, one at a
time, to a scratch copy of the repository, and run the test that should notice each.

    python scripts/mutations.py              # every mutation; exit status 1 if one is missed
    python scripts/mutations.py --list       # the mutations and their tests, without running
    python scripts/mutations.py --only 3 7   # some of them (numbers from --list)

Each named test first runs on the unmutated copy (it must pass), then on each of its mutations
(it must fail). Needs the project's environment (make .venv/.installed); a few minutes. The
mutations of CUDA-only paths (`gpu`) run their `gpu` test with LFR_TEST_GPU=1 where CUDA is
present; elsewhere they are listed as skipped, not as missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutation:
    what: str
    file: str
    old: str
    new: str
    test: str
    gpu: bool = False


TRAIN = "tests/test_train.py::"
UNEQUAL = "tests/test_summarize.py::test_unequal_budgets_divide_by_the_baselines_tokens_and_never_extrapolate"
SPEEDUP = "tests/test_speedup.py::"
DDP = "tests/test_ddp.py::test_two_ranks_train_the_same_lfr_run_as_one_process"
LOOP = "tests/test_loop.py::"
DDP_STOP = LOOP + "test_under_ddp_one_ranks_stop_request_stops_every_rank_at_the_same_step"
FORGETTING = "tests/test_forgetting.py::test_forgetting_fractions_of_a_hand_made_profile"
DOMAINS = ("tests/test_forgetting.py::"
           "test_domain_rows_give_each_domains_fractions_and_which_halved_its_drop_first")
MC = ("tests/test_evaluate.py::"
      "test_mc_items_continue_their_own_passage_and_borrow_endings_from_the_same_domain")
DOMAIN_ROWS = ("tests/test_evaluate.py::"
               "test_domain_rows_aggregate_that_domains_items_with_the_tasks_own_aggregation")
NOT_AN_OBJECT = ("tests/test_corpus_formats.py::"
                 "test_a_line_that_is_not_a_json_object_stops_the_cli_naming_file_and_line")
UNDECODABLE = "tests/test_corpus_formats.py::test_undecodable_bytes_are_counted_per_file"
CANDIDATES = "tests/test_candidates.py::"
SCORED_AND_CHARGED = (CANDIDATES + "test_candidates_are_scored_by_the_model_the_step_trains_and_their_"
                      "tokens_are_charged")
CANDIDATE_DDP = "tests/test_ddp.py::test_candidate_scoring_methods_stay_identical_across_two_ranks"
MUTATIONS = [
    Mutation("resume does not restore the RNGs", "lfr/checkpoint.py",
             '            set_rng_state(state["rng"])', "            pass",
             TRAIN + "test_lfr_with_dropout_resumes_to_the_same_run"),
    Mutation("LFR's scores are not restored on resume", "lfr/sampling/lfr.py",
             "            setattr(self, key, value.copy() if isinstance(value, np.ndarray) else value)",
             '            if key != "score": setattr(self, key, value)',
             TRAIN + "test_lfr_with_dropout_resumes_to_the_same_run"),
    Mutation("loss weights dropped from the gradient", "lfr/train.py",
             "loss = (losses if batch.w is None else losses * batch.w[rows]).mean() / tc.grad_accum",
             "loss = losses.mean() / tc.grad_accum", TRAIN + "test_loss_weights_reach_the_gradient"),
    Mutation("every micro-batch trains on the first slice", "lfr/train.py",
             "rows = slice(micro * tc.batch_size, (micro + 1) * tc.batch_size)",
             "rows = slice(0, tc.batch_size)",
             TRAIN + "test_grad_accumulation_equals_one_batch"),
    Mutation("linear decay instead of the cosine", "lfr/train.py",
             "coeff = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))",
             "coeff = 1 - min(1.0, progress)",
             TRAIN + "test_the_logged_lr_is_the_cosine_over_the_whole_plan"),
    Mutation("the schedule spans more steps than the plan", "lfr/train.py",
             "lr = lr_at(st.step, self.num_steps, tc)", "lr = lr_at(st.step, self.num_steps + 10, tc)",
             TRAIN + "test_the_logged_lr_is_the_cosine_over_the_whole_plan"),
    Mutation("focus drops round(drop x n), half to even", "lfr/sampling/lfr.py",
             "return num_scored - math.floor(drop * num_scored + 0.5)",
             "return num_scored - round(drop * num_scored)",
             "tests/test_lfr.py::test_focus_rounds_half_of_a_block_up_in_what_it_drops"),
    Mutation("the demo config is always loaded under a --configfile", "Snakefile",
             "if not workflow.config_settings.configfiles:", "if True:",
             "tests/test_workflow.py::test_paper_config_plans_every_run_and_reference"),
    Mutation("no snapshot at phase boundaries", "lfr/snapshots.py",
             "    if spec.phase_boundaries:", "    if False:",
             "tests/test_snapshots.py::test_snapshot_schedule_by_tokens_and_phase_boundaries"),
    Mutation("non-finite losses pass", "lfr/train.py",
             "    if np.isfinite(losses).all() and since is None:", "    if True:",
             TRAIN + "test_a_non_finite_loss_stops_the_run_naming_the_blocks"),
    Mutation("the job's deadline is ignored", "lfr/train.py",
             "if self.signal or self.deadline is None or time.time() <= self.deadline:",
             "if True:",
             TRAIN + "test_a_stop_is_asked_by_sigterm_sigusr1_or_the_deadline"),
    Mutation("the crossing speed-up divides by the method's own tokens", "lfr/report/summarize.py",
             '"crossing_speedup": b_tokens[-1] / reach', '"crossing_speedup": tokens[-1] / reach', UNEQUAL),
    Mutation("random's frontier is not made monotone", "lfr/report/speedup.py",
             "return np.log(compute), np.minimum.accumulate(loss, axis=-1)", "return np.log(compute), loss",
             SPEEDUP + "test_the_frontier_is_a_running_minimum_and_inverts_to_the_least_compute"),
    Mutation("outside random's range the bound is not the frontier's far end", "lfr/report/speedup.py",
             "return np.select([bound == 1, bound == -1], [log_c[..., -1], log_c[..., 0]], inside), bound",
             "return inside, bound",
             SPEEDUP + "test_outside_randoms_range_a_bound_not_an_extrapolation"),
    Mutation("the reference model is charged at the model's FLOPs", "lfr/report/summarize.py",
             'f_ref = info.get("reference_flops_per_token") or f', "f_ref = f",
             SPEEDUP + "test_flops_charge_each_model_at_its_own_size"),
    Mutation("a loss outside a curve is extrapolated (clamped)", "lfr/report/summarize.py",
             "    if not tokens[0] <= at <= tokens[-1]:", "    if False:", UNEQUAL),
    Mutation("SIGUSR1 is not handled", "lfr/train.py",
             "for sig in (signal.SIGTERM, signal.SIGUSR1):", "for sig in (signal.SIGTERM,):",
             TRAIN + "test_a_stop_is_asked_by_sigterm_sigusr1_or_the_deadline"),
    Mutation("EOT counts 1 byte in val_bpb", "lfr/tokenizer.py",
             'out = [b""] * meta["vocab_size"]', 'out = [b"?"] * meta["vocab_size"]',
             "tests/test_data.py::test_target_bytes_are_the_utf8_bytes_of_the_text_the_targets_encode"),
    Mutation("a block's bytes are its inputs', not its targets'", "lfr/tokenize.py",
             "targets = np.asarray(tokens[start * T + 1 : stop * T + 1])",
             "targets = np.asarray(tokens[start * T : stop * T])",
             "tests/test_data.py::test_target_bytes_by_hand"),
    Mutation("val_bpb divides by the whole split's bytes", "lfr/train.py",
             'val_bytes = int(target_bytes(job.data_dir, "val")[val_ids].sum())',
             'val_bytes = int(target_bytes(job.data_dir, "val").sum())',
             TRAIN + "test_val_bpb_is_logged_with_every_val_loss"),
    Mutation("bits per byte in nats", "lfr/train.py",
             "return nats_per_token * tokens / (math.log(2) * n_bytes)",
             "return nats_per_token * tokens / n_bytes", TRAIN + "test_bits_per_byte_by_hand"),
    Mutation("LFR's run is as long as its schedule, not random's (unequal budgets)",
             "lfr/sampling/lfr.py",
             "        B, target = self.batch_blocks, equal_token_steps(self.run, self.options.epochs)",
             "        B, target = self.batch_blocks, int(sum(self._phases(self.run.budget)[1])) // "
             "self.batch_blocks",
             "tests/test_lfr.py::test_every_schedule_trains_randoms_steps"),
    Mutation("LFR's scale is not solved for: the last phase absorbs the difference",
             "lfr/sampling/lfr.py", "            plan, _ = self._phases(self._fit_scale(target))",
             "            pass", "tests/test_lfr.py::test_the_schedule_keeps_its_shares_of_randoms_run"),
    Mutation("runs of unequal tokens are compared at 'equal budget'", "lfr/report/speedup.py",
             "    if abs(a - b) <= step:", "    if True:",
             SPEEDUP + "test_equal_budget_compares_only_runs_of_equal_tokens"),
    Mutation("a bound is written into the value column", "lfr/report/speedup.py",
             "out = {name: math.nan if code else value,", "out = {name: value,",
             SPEEDUP + "test_outside_randoms_range_a_bound_not_an_extrapolation"),
    Mutation("methods without a schedule ignore the run's budget", "lfr/sampling/base.py",
             "int((epochs or run.epochs) * run.budget * run.num_blocks)",
             "int((epochs or run.epochs) * run.num_blocks)",
             TRAIN + "test_a_budget_is_its_own_run_decayed_at_its_own_end"),
    Mutation("the paired interval ignores the t quantile (normal)", "lfr/report/speedup.py",
             "    half = float(t.ppf(0.5 + LEVEL / 2, len(logs) - 1)) *",
             "    half = 1.96 *",
             SPEEDUP + "test_the_paired_interval_covers_the_truth_with_a_shared_seed_effect"),
    Mutation("tokens to a reference read off random's frontier for every method",
             "lfr/report/speedup.py",
             '    for (size, method), part in runs[runs.lr_mult == 1].groupby(["size", "method"], '
             'sort=False):\n'
             '        points = part.groupby',
             '    for (size, method), part in runs[runs.lr_mult == 1].groupby(["size", "method"], '
             'sort=False):\n'
             '        part = runs[(runs["size"] == size) & (runs.method == BASELINE) & (runs.lr_mult == 1)]\n'
             '        points = part.groupby',
             SPEEDUP + "test_tokens_to_a_reference_come_from_each_methods_own_frontier_in_bits_per_byte"),
    Mutation("the all-gather puts the ranks' losses in reverse order", "lfr/distributed.py",
             "        packed = torch.stack(parts)", "        packed = torch.stack(parts[::-1])", DDP),
    Mutation("each rank trains the other rank's slice of the global batch", "lfr/loader.py",
             "self.part = slice(rank * rows_per_rank, (rank + 1) * rows_per_rank)",
             "self.part = slice((1 - rank) * rows_per_rank, (2 - rank) * rows_per_rank)", DDP),
    Mutation("a rank's stop request stays on its rank", "lfr/distributed.py",
             "        return parts[:, :-flags].reshape(-1), parts[:, -flags:].max(axis=0)",
             "        return parts[:, :-flags].reshape(-1), parts[0, -flags:]", DDP_STOP),
    Mutation("random waits for the device every step", "lfr/train.py",
             'send = sampler.observes != "none" or now', "send = True",
             LOOP + "test_random_waits_for_the_device_only_at_log_rows_and_checkpoints"),
    Mutation("late losses across a phase boundary (logged steps not landed at once)", "lfr/train.py",
             'if now or sampler.observes == "now" or self.stopper.why:',
             'if sampler.observes == "now" or self.stopper.why:',
             LOOP + "test_lfr_waits_once_a_step_and_gets_its_losses_one_step_late_within_a_phase"),
    Mutation("every sampler takes late losses", "lfr/train.py",
             'if now or sampler.observes == "now" or self.stopper.why:', "if now or self.stopper.why:",
             LOOP + "test_a_sampler_that_takes_no_late_losses_observes_each_step_before_the_next"),
    Mutation("a non-finite loss in an unsynced step goes unnoticed", "lfr/train.py",
             "self.bad = torch.maximum(self.bad, (~torch.isfinite(local)).any().float())", "pass",
             LOOP + "test_a_non_finite_loss_between_syncs_stops_the_run_at_the_next"),
    Mutation("the batch's targets are its inputs", "lfr/data.py",
             "        return rows[:, :-1], rows[:, 1:]", "        return rows[:, :-1], rows[:, :-1]",
             "tests/test_loader.py::test_a_batch_is_each_blocks_window_of_t_plus_one_tokens"),
    Mutation("DDP never syncs the gradients (no_sync on every micro-batch)", "lfr/train.py",
             "sync = micro == tc.grad_accum - 1 or d.world == 1", "sync = d.world == 1", DDP),
    Mutation("block domains attached in the profile's row order", "lfr/report/forgetting.py",
             '    domain = profile.drop_duplicates("block_id").set_index("block_id")["domain"].reindex(ids)',
             '    domain = profile.drop_duplicates("block_id")["domain"]', FORGETTING),
    Mutation("multiple descent of the forgotten divides by all blocks", "lfr/report/forgetting.py",
             '"multiple_descent_of_forgotten": multiple / forgotten if forgotten',
             '"multiple_descent_of_forgotten": multiple / n if forgotten', FORGETTING),
    Mutation("a domain's class fractions count every domain's blocks", "lfr/report/forgetting.py",
             '**class_fractions(part["class"].to_numpy(), part["events"].to_numpy()),',
             '**class_fractions(blocks["class"].to_numpy(), blocks["events"].to_numpy()),', DOMAINS),
    Mutation("learned_order ranks the latest half drop first", "lfr/report/forgetting.py",
             '.rank(method="min")', '.rank(method="min", ascending=False)', DOMAINS),
    Mutation("lfr_mc's label is not the true ending's position", "lfr/eval_tasks.py",
             '"label": choices.index(" " + true_end)}', '"label": 0}', MC),
    Mutation("lfr_mc's distractors come from every domain", "lfr/eval_tasks.py",
             "in rng.sample(by_domain[domain], min(len(by_domain[domain]), 50)):",
             "in rng.sample(sum(by_domain.values(), []), 50):", MC),
    Mutation("lfr_mc's distractors may come from the item's own document", "lfr/eval_tasks.py",
             "if other_id != doc_id and len(WORD.findall(ending)) >= 2", "if len(WORD.findall(ending)) >= 2",
             MC),
    Mutation("a domain row aggregates every domain's items", "lfr/evaluate.py",
             '"value": float(agg(values))',
             '"value": float(agg([v for (_, m), vs in by_domain.items() if m == metric for v in vs]))',
             DOMAIN_ROWS),
    Mutation("a line that is not JSON is reported without its file and line", "lfr/corpus.py",
             'raise ValueError(f"{where}: not valid JSON ({msg} at {at})")',
             'raise ValueError(f"not valid JSON ({msg} at {at})")', NOT_AN_OBJECT),
    Mutation("JSON's 'Invalid control character at' reads 'at at column'", "lfr/corpus.py",
             'msg = e.msg.removesuffix(" at")', "msg = e.msg", NOT_AN_OBJECT),
    Mutation("a JSON line that is not an object is not rejected", "lfr/corpus.py",
             "    if not isinstance(rec, dict):", "    if False:", NOT_AN_OBJECT),
    Mutation("undecodable sequences counted instead of bytes", "lfr/corpus.py",
             "    _undecodable[0] += err.end - err.start", "    _undecodable[0] += 1", UNDECODABLE),
    Mutation("the undecodable-bytes warning comes per line, not per file", "lfr/corpus.py",
             "        yield from f",
             "        for line in f: yield line; _report_undecodable(path, _undecodable[0] - before, "
             "encoding, stats)",
             UNDECODABLE),
    Mutation("the scored candidates are not charged", "lfr/train.py",
             "            self.state.scored_blocks += len(candidates)", "            pass",
             SCORED_AND_CHARGED),
    Mutation("each rank scores the same share of the candidates", "lfr/train.py",
             "    mine = ids[d.rank * share : (d.rank + 1) * share]", "    mine = ids[:share]",
             CANDIDATE_DDP),
    Mutation("the charged candidates are not in the checkpoint", "lfr/checkpoint.py",
             '        self.scored_blocks = state.get("scored_blocks", 0)', "        self.scored_blocks = 0",
             CANDIDATES + "test_candidate_scoring_methods_resume_to_the_same_run"),
    Mutation("rho-loss keeps the smallest reducible loss", "lfr/sampling/rho_loss.py",
             "np.lexsort((self.ids, -reducible))", "np.lexsort((self.ids, reducible))",
             "tests/test_rho_loss.py"),
    Mutation("rho-loss ignores the irreducible loss", "lfr/sampling/rho_loss.py",
             "        reducible = self.losses - self.irreducible[self.ids].astype(np.float64)",
             "        reducible = self.losses", "tests/test_rho_loss.py"),
    Mutation("selective backprop ignores beta", "lfr/sampling/selective_backprop.py",
             "        keep = u < p**self.options.beta", "        keep = u < p",
             "tests/test_selective_backprop.py"),
    Mutation("selective backprop keeps the low-loss candidates", "lfr/sampling/selective_backprop.py",
             "        keep = u < p**self.options.beta", "        keep = u < (1 - p) ** self.options.beta",
             "tests/test_selective_backprop.py"),
    Mutation("selective backprop's queue is not restored", "lfr/sampling/selective_backprop.py",
             '        self.queue = state["queue"].astype(np.int64)', "        pass",
             "tests/test_selective_backprop.py"),
    Mutation("AdamW is never fused", "lfr/model.py", 'fused=device.type == "cuda")', "fused=False)",
             "tests/test_gpu.py::test_training_on_cuda_uses_fused_adamw", gpu=True),
]


def scratch_copy(into: Path) -> Path:
    """The repository's files as in the working tree (tracked and untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True, text=True).stdout.splitlines()
    for name in files:
        if (REPO / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name)
    return into


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def passes(root: Path, test: str, gpu: bool = False) -> bool:
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", **({"LFR_TEST_GPU": "1"} if gpu else {})}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test],
                       cwd=root, env=env, capture_output=True, text=True)
    return r.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="print the mutations and their tests")
    parser.add_argument("--only", type=int, nargs="+", help="numbers of the mutations to run")
    args = parser.parse_args()
    chosen = [(i, m) for i, m in enumerate(MUTATIONS, 1) if not args.only or i in args.only]
    if args.list:
        for i, m in chosen:
            print(f"{i:2d}. {m.what} ({m.file}) -> {m.test}{' [gpu]' if m.gpu else ''}")
        return
    if not has_cuda():
        for i, m in (c for c in chosen if c[1].gpu):
            print(f"{i:2d}. skipped (needs CUDA): {m.what} ({m.file}) by {m.test}", flush=True)
        chosen = [(i, m) for i, m in chosen if not m.gpu]
    missed = 0
    with tempfile.TemporaryDirectory(prefix="lfr-mutations-") as tmp:
        root = scratch_copy(Path(tmp))
        for test, gpu in dict.fromkeys((m.test, m.gpu) for _, m in chosen):
            if not passes(root, test, gpu):
                sys.exit(f"{test} fails without any mutation; fix it first")
        for i, m in chosen:
            path = root / m.file
            original = path.read_text()
            if original.count(m.old) != 1:
                sys.exit(f"mutation {i}: {m.old!r} is not exactly once in {m.file}; update this script")
            path.write_text(original.replace(m.old, m.new))
            caught = not passes(root, m.test, m.gpu)
            path.write_text(original)
            missed += not caught
            print(f"{i:2d}. {'caught' if caught else 'MISSED'}: {m.what} ({m.file}) by {m.test}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
