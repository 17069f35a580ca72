"""bench/compare.py and bench/compare_stats.py: per-run scalars, the tests and Holm's adjustment against hand-computed
values, the verdict rule, the record of every invocation (killed ones too); and the committed results.json, which
must be byte for byte what `python bench/compare.py --report` computes from the committed runs, with verdicts that
follow from its own numbers by the rule it states."""

import glob
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare  # noqa: E402  (bench/compare.py)
import compare_stats as stats  # noqa: E402  (bench/compare_stats.py)

COMMITTED = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "compare", "*", "results.json")))


def test_the_episodes_to_a_level_are_interpolated_between_evaluations():
    curve = [(0, 0.1), (640, 0.5), (1280, 0.9), (1920, 0.7)]
    assert compare.first_reach(curve, 0.8) == pytest.approx(640 + 0.3 / 0.4 * 640)  # 1120
    assert compare.first_reach(curve, 0.95) is None
    assert compare.first_reach([(0, 0.9), (640, 0.95)], 0.8) == 640  # already there: the first evaluation after
    assert compare.first_reach(curve, 0.5) == 640


def test_the_probability_of_improvement_counts_every_pair_of_runs_ties_half():
    # x = 1, 2, 3 against y = 2, 2, 0: the 9 pairs score 0 0 1 | .5 .5 1 | 1 1 1
    assert stats.improvement([1.0, 2.0, 3.0], [2.0, 2.0, 0.0]) == pytest.approx(6 / 9)


def test_at_one_step_per_turn_the_sweeps_loss_does_not_matter():
    """Why the comparison runs no token-level sweep beside grpo x T: where the ratio is 1 (the sweep's one step per
    turn, `old` taken with the current weights) GSPO's and GRPO's losses have one gradient, -A mean_k d log pi."""
    import torch

    import seeupo
    torch.manual_seed(0)
    logp, adv = (-torch.rand(4, 6)).requires_grad_(), torch.randn(4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0]]).float()

    def gradient(loss, old):
        return torch.autograd.grad(loss(logp, old, mask, adv, 0.2, 0.2).sum(), logp)[0]
    at_one = [gradient(loss, logp.detach()) for loss in (seeupo.gspo_loss, seeupo.grpo_loss)]
    assert torch.allclose(at_one[0], -adv[:, None] * mask / mask.sum(-1, keepdim=True)) and torch.allclose(*at_one)
    moved = logp.detach() + 0.3 * torch.randn(4, 6)  # a later minibatch of the all-turns update: the ratio moved
    assert not torch.allclose(gradient(seeupo.gspo_loss, moved), gradient(seeupo.grpo_loss, moved))


def test_the_paired_tests_match_hand_computed_values():
    tests = stats.paired_tests([1, 2, 3, 4, 5])  # mean 3, se sqrt(2.5 / 5); t = 4.243 on 4 df; t(0.975, 4) = 2.7764
    assert tests["t_p"] == pytest.approx(0.013236, abs=1e-6)
    assert tests["t_ci"] == pytest.approx([3 - 2.776445 * 0.5 ** 0.5, 3 + 2.776445 * 0.5 ** 0.5], abs=1e-5)
    assert tests["wilcoxon_p"] == pytest.approx(2 / 32)  # all five positive: 2 of the 2^5 sign patterns as extreme
    # a zero and a tie: ranks of |d| with the zero 1, 2.5 2.5 4 5; the zero's rank dropped (Pratt): T+ = 9 of 14;
    # of the 16 sign flips of the other four, 12 lie as far from 7 as 9 does: p = 12/16, exactly
    assert stats.paired_tests([0, 1, 1, 2, -3])["wilcoxon_p"] == pytest.approx(12 / 16)
    assert stats.paired_tests([0.0] * 6) == {"t_ci": [0.0, 0.0], "t_p": 1.0, "wilcoxon_p": 1.0}


def test_holm_multiplies_the_kth_smallest_p_by_m_minus_k_plus_1_kept_monotone():
    # sorted 0.005 0.01 0.03 0.04 -> x4 x3 x2 x1 = 0.02 0.03 0.06 0.04 -> monotone 0.02 0.03 0.06 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == [1.0, 1.0]


def test_a_difference_is_called_only_where_the_adjusted_test_and_both_intervals_agree():
    run = lambda final, auc: {"final": final, "auc": auc}  # noqa: E731
    metrics = ["final", "auc"]
    ahead = stats.pair_summary([run(0.9 + 0.01 * k, 0.5) for k in range(8)], [run(0.5, 0.5)] * 8, metrics)
    assert stats.control_family([ahead], metrics) == 2
    assert ahead["final"]["verdict"] == "X > Y" and ahead["final"]["diff_ci"][0] > 0 and ahead["final"]["t_ci"][0] > 0
    assert ahead["auc"]["verdict"] == "not measurable" and ahead["auc"]["diff_ci"] == [0.0, 0.0]
    mixed = stats.pair_summary([run(v, 0.5) for v in (1, 0, 1, 0, 1, 0)], [run(0.5, 0.5)] * 6, metrics)
    stats.control_family([mixed], metrics)
    assert mixed["final"]["verdict"] == "not measurable" and mixed["final"]["diff_ci"][0] < 0 < mixed["final"]["diff_ci"][1]
    # p ~ 0.006 alone is called; in a family of 10 comparisons Holm lifts it to ~0.06: not measurable, intervals or not
    edge = [run(0.6 + d, 0.5) for d in (0.2, 0.05, 0.3, 0.1, 0.25, -0.02, 0.15, 0.12)]
    alone = stats.pair_summary(edge, [run(0.6, 0.5)] * 8, metrics)
    stats.control_family([alone], metrics)
    assert alone["final"]["t_p"] < 0.01 and alone["final"]["verdict"] == "X > Y"
    family = [stats.pair_summary(edge, [run(0.6, 0.5)] * 8, metrics) for _ in range(5)]
    assert stats.control_family(family, metrics) == 10
    assert family[0]["final"]["diff_ci"][0] > 0 and family[0]["final"]["t_ci"][0] > 0
    assert family[0]["final"]["t_p_holm"] > stats.ALPHA and family[0]["final"]["verdict"] == "not measurable"
    few = stats.pair_summary([run(1.0, 0.5), run(0.9, 0.5)], [run(0.1, 0.5), run(0.2, 0.5)], metrics)
    stats.control_family([few], metrics)
    assert few["final"]["verdict"] == "too few seeds" and "t_p_holm" not in few["final"]  # not in the family


def test_every_invocation_is_recorded_with_its_machine_even_a_killed_one(tmp_path, monkeypatch):
    args = compare.parse_args(["--out", str(tmp_path), "--envs", "lookup", "--threads", "1", "--jobs", "2"])
    out = compare.run_dir(args, "lookup", 1e-3, "seeupo", 0)
    os.makedirs(os.path.join(out, "checkpoint"))
    json.dump({"step": 20}, open(os.path.join(out, "checkpoint", "progress.json"), "w"))
    # an invocation whose compare.py was killed: no exit; its seconds are those of its last heartbeat
    json.dump({"invocations": [{"start": 1000.0, "seconds": 90.0, "exit": None, "resumed_from_step": None,
                                "cpu": "X", "threads": 1, "runs_at_a_time": 2}]}, open(os.path.join(out, "wall.json"), "w"))
    monkeypatch.setattr(compare, "HEARTBEAT", 0.1)
    seen = []

    class Running:  # train.py, running for two heartbeats, then stopped by a Ctrl-C
        def __init__(self, cmd, **kwargs):
            self.cmd = cmd

        def wait(self, timeout):
            seen.append(compare.invocations_of(out)[-1]["seconds"])
            if len(seen) < 3:
                time.sleep(timeout)
                raise subprocess.TimeoutExpired(self.cmd, timeout)
            raise KeyboardInterrupt
    monkeypatch.setattr(subprocess, "Popen", Running)
    with pytest.raises(KeyboardInterrupt):
        compare.train(args, "lookup", 1e-3, "seeupo", 0)
    killed, this = compare.invocations_of(out)
    assert killed["seconds"] == 90.0 and killed["exit"].startswith("killed")
    assert seen[0] == 0.0 and seen[2] > 0.0  # written as it started, then at every heartbeat
    assert this["exit"] == "interrupted" and this["seconds"] >= seen[2] and this["resumed_from_step"] == 20
    assert compare.machine(this) == f"{compare.cpu_model()}, 1 torch thread(s) per run, 2 at a time"
    # older runs kept only the finished invocations' seconds and the last one's machine
    json.dump({"invocations": [50.0, 60.0], "cpu": "Y", "threads": 1, "runs_at_a_time": 2},
              open(os.path.join(out, "wall.json"), "w"))
    assert [compare.machine(i) for i in compare.invocations_of(out)] == ["unknown", "Y, 1 torch thread(s) per run, 2 at a time"]


@pytest.mark.skipif(not COMMITTED, reason="no committed bench/results/compare/*/results.json")
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.split(os.sep)[-2])
def test_the_committed_results_are_what_the_report_computes_from_the_committed_runs(path):
    committed = json.load(open(path))
    args = compare.parse_args(["--regime", committed["regime"], "--report", "--out", os.path.dirname(path),
                               "--envs", *committed["envs"], "--lrs", *map(str, committed["lrs"]),
                               "--methods", *committed["methods"], "--seeds", str(committed["seeds"])])
    assert args.shared == committed["shared"]
    assert compare.results(args)[1] == open(path).read()  # byte for byte


@pytest.mark.skipif(not COMMITTED, reason="no committed bench/results/compare/*/results.json")
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.split(os.sep)[-2])
def test_the_committed_verdicts_follow_from_their_own_numbers_by_the_stated_rule(path):
    committed = json.load(open(path))
    assert committed["rule"] == stats.RULE and committed["alpha"] == 0.05
    comparisons = [(p, p[m]) for by_lr in committed["summary"].values() for s in by_lr.values() for p in s["pairs"]
                   for m in ("final", "auc")]
    family = [v for p, v in comparisons if p["seeds"] >= stats.MIN_SEEDS]
    assert len(family) == committed["family"]
    for test in ("t_p", "wilcoxon_p"):  # Holm, recomputed here from the family's own p values
        ps = sorted(v[test] for v in family)
        for v in family:
            k = max(i for i, p in enumerate(ps) if p == v[test])  # ties take the largest multiplier's rank
            assert v[f"{test}_holm"] == pytest.approx(
                min(1.0, max((len(ps) - j) * ps[j] for j in range(k + 1)))), test
    for p, v in comparisons:
        if p["seeds"] < stats.MIN_SEEDS:
            assert v["verdict"] == "too few seeds"
            continue
        above = v["t_p_holm"] < 0.05 and min(v["diff_ci"][0], v["t_ci"][0]) > 0
        below = v["t_p_holm"] < 0.05 and max(v["diff_ci"][1], v["t_ci"][1]) < 0
        assert v["verdict"] == ("X > Y" if above else "X < Y" if below else "not measurable"), (p["x"], p["y"])
        assert v["diff_ci"][0] <= v["diff"] <= v["diff_ci"][1] and v["t_ci"][0] <= v["diff"] <= v["t_ci"][1]


AUTHORS = os.path.join(ROOT, "bench", "results", "compare", "authors")


@pytest.mark.skipif(not os.path.exists(os.path.join(AUTHORS, "lookup", "lr0.001", "gspo", "seed4", "wall.json")),
                    reason="no committed authors-regime runs")
@pytest.mark.filterwarnings("ignore:Tight layout not applied")  # two pairs: differences.png is small
@pytest.mark.slow  # the report, twice
def test_the_report_is_byte_for_byte_the_same_when_written_twice(tmp_path, monkeypatch):
    """--report written twice from the same runs (5 committed seeds of two methods), here and in a fresh process
    with another PYTHONHASHSEED, puts the same bytes into every file: results.md, results.json and the PNGs (no
    time, version drift or hash order in them; only the date of writing, the same both times). ~15 s."""
    pytest.importorskip("matplotlib")
    for method in ("seeupo", "gspo"):
        for seed in range(5):
            run = os.path.join("lookup", "lr0.001", method, f"seed{seed}")
            os.makedirs(tmp_path / run)
            for name in ("args.json", "metrics.jsonl.gz", "wall.json"):
                with open(os.path.join(AUTHORS, run, name), "rb") as f:
                    (tmp_path / run / name).write_bytes(f.read())
    argv = ["--report", "--out", str(tmp_path), "--envs", "lookup", "--methods", "seeupo", "gspo", "--seeds", "5"]
    monkeypatch.setattr(sys, "argv", ["bench/compare.py", *argv])  # the report's header quotes the command
    compare.report(compare.parse_args(argv), 0)
    written = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert sorted(written) == ["curves_lookup_lr0.001.png", "differences.png", "results.json", "results.md"]
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "compare.py"), *argv], check=True, cwd=ROOT,
                   capture_output=True, env={**os.environ, "PYTHONHASHSEED": "1"})  # this one's is random
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == written
