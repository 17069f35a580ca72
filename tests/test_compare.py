"""bench/compare.py's numbers: its per-run scalars and statistics by hand, and the committed results, which must be
exactly what `python bench/compare.py --report` computes from the committed runs (args.json, metrics.jsonl.gz)."""

import glob
import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import compare  # noqa: E402  (bench/compare.py)

COMMITTED = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "compare", "*", "results.json")))


def test_the_episodes_to_a_level_are_interpolated_between_evaluations():
    curve = [(0, 0.1), (640, 0.5), (1280, 0.9), (1920, 0.7)]
    assert compare.first_reach(curve, 0.8) == pytest.approx(640 + 0.3 / 0.4 * 640)  # 1120
    assert compare.first_reach(curve, 0.95) is None
    assert compare.first_reach([(0, 0.9), (640, 0.95)], 0.8) == 640  # already there: the first evaluation after
    assert compare.first_reach(curve, 0.5) == 640


def test_the_probability_of_improvement_counts_every_pair_of_runs_ties_half():
    # x = 1, 2, 3 against y = 2, 2, 0: the 9 pairs score 0 0 1 | .5 .5 1 | 1 1 1
    assert compare._improvement([1.0, 2.0, 3.0], [2.0, 2.0, 0.0]) == pytest.approx(6 / 9)


def test_a_difference_is_called_only_where_its_paired_interval_excludes_zero():
    run = lambda final, auc: {"final": final, "auc": auc}  # noqa: E731
    ahead = compare.pair_summary([run(0.9 + 0.01 * k, 0.5) for k in range(8)], [run(0.5, 0.5) for _ in range(8)])
    assert ahead["final"]["verdict"] == "X > Y" and ahead["final"]["diff_ci"][0] > 0
    assert ahead["auc"]["verdict"] == "not measurable" and ahead["auc"]["diff_ci"] == [0.0, 0.0]
    mixed = compare.pair_summary([run(v, 0.5) for v in (1, 0, 1, 0, 1, 0)], [run(0.5, 0.5)] * 6)
    assert mixed["final"]["verdict"] == "not measurable" and mixed["final"]["diff_ci"][0] < 0 < mixed["final"]["diff_ci"][1]
    few = compare.pair_summary([run(1.0, 0.5), run(0.9, 0.5)], [run(0.1, 0.5), run(0.2, 0.5)])
    assert few["final"]["verdict"] == "too few seeds"


@pytest.mark.skipif(not COMMITTED, reason="no committed bench/results/compare/*/results.json")
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.split(os.sep)[-2])
def test_the_committed_results_are_what_the_report_computes_from_the_committed_runs(path):
    committed = json.load(open(path))
    args = compare.parse_args(["--regime", committed["regime"], "--report", "--out", os.path.dirname(path),
                               "--envs", *committed["envs"], "--lrs", *map(str, committed["lrs"]),
                               "--methods", *committed["methods"], "--seeds", str(committed["seeds"])])
    assert args.shared == committed["shared"]
    assert compare.summarize(args) == committed["summary"]
