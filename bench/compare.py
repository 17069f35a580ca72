"""SeeUPO against its ablations and the all-turns update, on paired seeds, with intervals (a benchmark, not a test).

    python bench/compare.py                     # the authors' schedule: 9 methods x 10 seeds x lookup, relay (180 runs)
    python bench/compare.py --quick             # seeupo, gspo, gspo x T; seeds 0-1; lookup; 50 steps
    python bench/compare.py --regime 16step     # the second regime: 16 clipped optimizer steps per turn
    python bench/compare.py --report            # only re-read the runs: every table, curve and interval

Every run is `python train.py` with ONE shared setting per regime (REGIMES below, fixed before the runs and the
same for every method: only a method's own flags differ), so every method samples the same number of episodes,
and seed s draws the same tasks at every step and starts from the same tiny model for every method: the seeds
are PAIRED, and a difference between two methods is measured seed by seed.

Regimes (seeupo.sweep() runs every method; see its docstring):
  authors   the authors' released schedule: ONE optimizer step per turn per batch for the sweeps, ONE per batch
            for the all-turns baselines, which are theirs: one sample per turn (a ratio per turn), group-std
            division, no batch normalisation (`--baseline_samples turn --std_norm --no_batch_norm`); KL 0.002;
            a constant lr 1e-3 (the best lr of every sweep on both environments in the previous round's scan of
            1e-3, 3e-3 and 1e-2); 80 steps of 64 episodes; held-out evaluation every 5 steps.
  16step    this project's own regime (the default recipe's update until 2026-12-07): 4 epochs x 4
            minibatches (16 clipped steps per turn), KL 0.05, our baselines (one whole-episode sample, batch
            normalisation), 25 steps, lrs 1e-3 and 3e-3, seeds 0-2.

Methods (authors regime):
  seeupo                   reverse turn order + the correction M (the paper's method)
  forward                  turn order 1..T, with the correction        (ablation: the order)
  no-correction            reverse order, M = 1                        (ablation: the correction)
  ... per-turn             the same sweep with one set of AdamW moments per turn index (`--optimizer_state
                           per_turn`): removes one of the three couplings between turns, the shared moments (not
                           the shared weights; docs/algorithm.md, section 4)
  gspo x T                 all turns at once with T x as many minibatches: as many optimizer steps per batch as
                           the sweep takes (T = the env's turns), the control the paper does not run
  gspo                     all turns at once, one optimizer step per batch (the paper's baseline)
  grpo x T                 gspo x T with the token-level loss (GRPO's clip per token). Its sweep counterpart is
                           SeeUPO itself: at one step per turn the sweep's ratio is 1 where its gradient is taken,
                           and there GSPO's and GRPO's losses have the same gradient (tests/test_compare.py)
The 16step regime runs the earlier nine (seeupo, forward, random, no-correction, gspo, gspo x T, grpo, grpo x T,
reinforce).

Measured per run (from its metrics.jsonl): the final held-out success; the area under the held-out curve (AUC:
the mean held-out success over the run, trapezoidal in sampled episodes: it rewards learning early); the sampled
episodes until held-out success first reaches 0.8 (linearly interpolated between evaluations; None if never).
Per method: mean and IQM (the mean of the middle half of the runs) with 95% percentile-bootstrap intervals.
Per pair of methods (PAIRS): the mean paired difference over seeds with its 95% bootstrap and paired-t intervals,
the paired t-test's p and the exact Wilcoxon signed-rank p, both Holm-adjusted over the family of every paired
comparison in the report, and rliable's probability of improvement P(X > Y). A difference is called by
compare_stats.RULE: the Holm-adjusted t-test's p below 0.05 decides (the intervals are unadjusted, for size; they
must exclude zero too, which can only withhold a call), else "not measurable with N seeds". The exact Wilcoxon p
is a check beside: with n seeds it is never below 2/2^n, so over a family of m comparisons it can call nothing
unless m * 2/2^n < 0.05 (the report says which). Each called difference is given beside its control at equal
optimizer steps where PAIRS has one (STEP_MATCHED), and with the Holm p it would have with any one seed left out
of every comparison (results.json's "leave_one_seed_out"). Bootstrap: 10,000 resamples, a fixed seed, so the report
is a pure function of the runs (and so are its PNGs: tests/test_compare.py writes a report twice, byte for byte).

Results: OUT/ENV/lrLR/METHOD/seedS/ holds each run's --out. Its args.json (with "resumed_from": the checkpoint
steps it resumed from), metrics.jsonl.gz (gzipped once the run ends) and wall.json are committed; the adapter,
checkpoints and log are not. wall.json records every invocation that worked on the run, written as it starts
(so a killed one counts too): its seconds, exit, the step it resumed from, and the CPU model, torch threads and
runs at a time it ran with; the report's header counts them. A finished run is not run again; a run cut off
resumes from its checkpoint. Then OUT/results.md, results.json (tests/test_compare.py checks that it is byte for
byte what --report computes from the committed runs, and that its verdicts follow from its numbers by the rule),
per env and lr a PNG of the curves (support.plots.plot_runs()), and differences.png, every paired difference with
its intervals (the PNGs need matplotlib, in requirements.txt).
"""

import argparse
import datetime
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402
from support.plots import read_metrics  # noqa: E402
import compare_stats as stats  # noqa: E402  (bench/compare_stats.py)
from seeds import cpu_model  # noqa: E402  (bench/seeds.py)

THEIR_BASELINES = ["--baseline_samples", "turn", "--std_norm", "--no_batch_norm"]
PER_TURN = ["--optimizer_state", "per_turn"]
# Each regime's shared setting, fixed before its runs and never per method.
REGIMES = {
    "authors": dict(shared=dict(steps=80, tasks_per_step=8, group_size=8, ppo_epochs=1, minibatches=1, kl_coef=0.002,
                                lr_scheduler_type="constant", eval_every=5, eval_tasks=64, eval_samples=2,
                                save_every=20),
                    lrs=(1e-3,), seeds=10, baselines=THEIR_BASELINES,
                    methods=("seeupo", "forward", "no-correction", "seeupo per-turn", "forward per-turn",
                             "no-correction per-turn", "gspo x T", "gspo", "grpo x T")),
    "16step": dict(shared=dict(steps=25, tasks_per_step=8, group_size=8, ppo_epochs=4, minibatches=4, kl_coef=0.05,
                               eval_every=5, eval_tasks=64, eval_samples=2, save_every=5),
                   lrs=(1e-3, 3e-3), seeds=3, baselines=[],
                   methods=("seeupo", "forward", "random", "no-correction", "gspo", "gspo x T", "grpo", "grpo x T",
                            "reinforce")),
}
ENVS = ("lookup", "relay")
HEARTBEAT = 30  # seconds between the updates of a running invocation's record in wall.json
# (X, Y, the question X - Y answers): the pairs whose paired differences the report gives, where both ran
PAIRS = [("seeupo", "forward", "the reverse order vs forward"),
         ("seeupo per-turn", "forward per-turn", "the reverse order vs forward, Adam per turn"),
         ("seeupo", "no-correction", "the correction"),
         ("seeupo per-turn", "no-correction per-turn", "the correction, Adam per turn"),
         ("seeupo", "gspo x T", "the sweep vs all turns at once, at equal optimizer steps"),
         ("seeupo per-turn", "gspo x T", "the sweep (Adam per turn) vs all turns at once, equal steps"),
         ("seeupo", "gspo", "the sweep vs the paper's one-step baseline"),
         ("seeupo", "grpo x T", "the sweep vs all turns at once with a token-level loss, equal steps"),
         ("seeupo per-turn", "seeupo", "one Adam state per turn vs one shared"),
         ("forward per-turn", "forward", "one Adam state per turn vs one shared (forward)"),
         ("no-correction per-turn", "no-correction", "one Adam state per turn vs one shared (no correction)")]
# a pair whose Y takes fewer optimizer steps per batch than X -> the pair that gives Y as many: a call on the first is
# shown beside the second, since the called difference may be the number of steps rather than the turn-by-turn order
STEP_MATCHED = {("seeupo", "gspo"): ("seeupo", "gspo x T")}
METRICS = {"final": "final held-out success", "auc": "area under the held-out curve (mean success over the run)"}


def method_flags(method, turns, regime):
    """A method's own train.py flags: the only flags that differ between the methods of a regime."""
    base, mb = regime["baselines"], regime["shared"]["minibatches"]
    flags = {"seeupo": [], "forward": ["--order", "sequential"], "random": ["--order", "random"],
             "no-correction": ["--no_correction"],
             "gspo": ["--algo", "gspo", *base], "gspo x T": ["--algo", "gspo", *base, "--minibatches", str(mb * turns)],
             "grpo": ["--algo", "grpo", *base], "grpo x T": ["--algo", "grpo", *base, "--minibatches", str(mb * turns)],
             "reinforce": ["--algo", "reinforce", *base]}
    name = method.removesuffix(" per-turn")
    return flags[name] + (PER_TURN if name != method else [])


def plan(args):
    """[(env, lr, method, seed)]: every method at every lr on every seed, seed by seed (a cut-off invocation
    leaves whole seeds, which is what the paired comparison needs)."""
    return [(env, lr, method, seed) for env in args.envs for lr in args.lrs for seed in range(args.seeds)
            for method in args.methods]


def run_dir(args, env, lr, method, seed):
    return os.path.join(args.out, env, f"lr{lr:g}", method.replace(" ", "_"), f"seed{seed}")


def done(folder, steps):
    path = os.path.join(folder, "args.json")
    return (os.path.exists(os.path.join(folder, "metrics.jsonl.gz")) and os.path.exists(path)
            and json.load(open(path))["steps"] == steps)


def train(args, env, lr, method, seed):
    """One train.py run (resumed if it was cut off); then its metrics are gzipped and the rest of the folder
    (adapter, checkpoint, log) stays local. Returns its folder."""
    out = run_dir(args, env, lr, method, seed)
    shared, flags = args.shared, method_flags(method, envs.ENVS[env]().max_turns, args.setting)
    if done(out, shared["steps"]):
        return out
    if os.path.exists(os.path.join(out, "args.json")):  # never mix runs of another setting into the table
        held = json.load(open(os.path.join(out, "args.json")))
        wanted = {**{k: v for k, v in shared.items() if f"--{k}" not in flags}, "lr": lr, "seed": seed}
        if any(held.get(k) != v for k, v in wanted.items()):
            raise SystemExit(f"error: {out} holds a run with other settings than {wanted}; choose another --out")
    # every invocation's record is written as it starts and its seconds every HEARTBEAT s while it runs: one that
    # never finished (compare.py itself killed) is found here, its seconds those of its last heartbeat
    invocations = invocations_of(out)
    if invocations and invocations[-1]["exit"] is None:
        invocations[-1]["exit"] = f"killed (seconds: to its last record, at most {HEARTBEAT} s before)"
    progress = os.path.join(out, "checkpoint", "progress.json")
    resumed_from = json.load(open(progress))["step"] if os.path.exists(progress) else None
    if resumed_from is None:
        shutil.rmtree(out, ignore_errors=True)  # a run killed before its first checkpoint: start it afresh
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--env", env, "--lr", str(lr), "--seed", str(seed),
           "--out", out, "--cpu_threads", str(args.threads),
           *[x for k, v in shared.items() for x in (f"--{k}", str(v))], *flags,
           *(["--resume"] if resumed_from is not None else [])]
    record = {"start": round(time.time(), 1), "seconds": 0.0, "exit": None, "resumed_from_step": resumed_from,
              "cpu": cpu_model(), "threads": args.threads, "runs_at_a_time": args.jobs}
    write_wall(out, invocations + [record])
    try:
        with open(os.path.join(out, "log.txt"), "a") as log:
            log.write(" ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            while record["exit"] is None:
                try:
                    record["exit"] = proc.wait(timeout=HEARTBEAT)
                except subprocess.TimeoutExpired:
                    record["seconds"] = round(time.time() - record["start"], 1)
                    write_wall(out, invocations + [record])
    finally:  # a failed or interrupted invocation's seconds count too
        record["seconds"] = round(time.time() - record["start"], 1)
        record["exit"] = "interrupted" if record["exit"] is None else record["exit"]
        write_wall(out, invocations + [record])
    if record["exit"]:
        raise RuntimeError(f"{out} failed (exit {record['exit']}); see {out}/log.txt")
    with open(os.path.join(out, "metrics.jsonl"), "rb") as f, gzip.GzipFile(
            os.path.join(out, "metrics.jsonl.gz"), "wb", mtime=0) as z:  # mtime 0: the same bytes every time
        z.write(f.read())
    os.remove(os.path.join(out, "metrics.jsonl"))
    return out


def invocations_of(folder):
    """wall.json's record of every invocation that worked on a run: seconds, exit, the step it resumed from, the
    CPU model, torch threads and runs at a time. Older runs kept only the seconds of the invocations that
    finished, and the machine of the last one: what they did not record is "unknown"."""
    path = os.path.join(folder, "wall.json")
    if not os.path.exists(path):
        return []
    wall = json.load(open(path))
    if not wall["invocations"] or isinstance(wall["invocations"][0], dict):
        return wall["invocations"]
    last = len(wall["invocations"]) - 1
    return [{"seconds": s, "exit": 0, "resumed_from_step": "unknown",
             **{k: wall[k] if i == last else "unknown" for k in ("cpu", "threads", "runs_at_a_time")}}
            for i, s in enumerate(wall["invocations"])]


def write_wall(folder, invocations):
    with open(os.path.join(folder, "wall.json"), "w") as f:
        json.dump({"invocations": invocations}, f, indent=1)


# ----------------------------------------------------------------------------- one run's numbers
def read_run(folder):
    """A finished run's numbers, from its metrics (and wall.json)."""
    records = read_metrics(folder)
    steps = [r for r in records if "reward_mean" in r]
    episodes, x = 0, {0: 0}
    for r in steps:
        episodes += r["episodes"]
        x[r["step"]] = episodes
    curve = [(x[r["step"]], r["eval_success_rate"]) for r in records if "eval_success_rate" in r]
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(curve, curve[1:])) / curve[-1][0]
    turns = [s for r in steps for t, s in r["turn_stats"].items() if t != "-1"]
    wall = invocations_of(folder)
    resumed = json.load(open(os.path.join(folder, "args.json"))).get("resumed_from", "unknown")  # older runs: unknown
    return {"machines": [machine(i) for i in wall] or ["unknown"],
            "resumed": resumed if resumed == "unknown" else "from step " + ", ".join(map(str, resumed)) if resumed
            else "never",
            "final": curve[-1][1], "auc": area, "to_80": first_reach(curve, 0.8), "eval_curve": curve,
            "kl_end": steps[-1]["kl"], "optimizer_steps_per_batch": statistics.fmean(r["optimizer_steps"] for r in steps),
            # the correction M_j each turn applied, over the run's steps: the range of its per-turn mean, its largest std
            "correction_mean_range": [min(s["correction_mean"] for s in turns), max(s["correction_mean"] for s in turns)]
            if turns else None,
            "correction_std_max": max(s["correction_std"] for s in turns) if turns else None,
            "step_seconds": statistics.fmean(r["step_seconds"] for r in steps),
            "wall_seconds": sum(i["seconds"] for i in wall if isinstance(i["seconds"], float | int)),
            # invocations killed under the code before the heartbeat (fe31b5c) have no seconds: not in wall_seconds
            "wall_unrecorded": sum(not isinstance(i["seconds"], float | int) for i in wall)}


def machine(invocation):
    """One invocation's machine, as it recorded it: CPU model, torch threads per run, runs at a time."""
    if invocation["cpu"] == "unknown":
        return "unknown"
    return f"{invocation['cpu']}, {invocation['threads']} torch thread(s) per run, {invocation['runs_at_a_time']} at a time"


def first_reach(curve, level):
    """Sampled episodes at which the held-out curve first reaches `level`, linearly interpolated between the two
    evaluations around it; None if it never does."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if y1 >= level:
            return x1 if y0 >= level or y1 == y0 else x0 + (level - y0) / (y1 - y0) * (x1 - x0)
    return 0 if curve and curve[0][1] >= level else None


# ----------------------------------------------------------------------------- per method, per pair
def method_summary(runs):
    """Over one method's runs (seed order): each metric's per-seed values, mean and IQM with intervals."""
    out = {"seeds": len(runs)}
    for m in METRICS:
        values = [r[m] for r in runs]
        out[m] = {"per_seed": values, "mean": statistics.fmean(values), "mean_ci": stats.interval([values], stats.mean),
                  "iqm": float(stats.iqm(values)), "iqm_ci": stats.interval([values], stats.iqm)}
    reached = [r["to_80"] for r in runs if r["to_80"] is not None]
    out["to_80"] = {"per_seed": [r["to_80"] for r in runs], "reached": len(reached),
                    "median": statistics.median(reached) if reached else None}
    out["kl_end"] = [statistics.fmean(r["kl_end"] for r in runs), min(r["kl_end"] for r in runs),
                     max(r["kl_end"] for r in runs)]
    ranges = [r["correction_mean_range"] for r in runs if r["correction_mean_range"]]
    out["correction"] = {"mean_range": [min(a for a, _ in ranges), max(b for _, b in ranges)],
                         "std_max": max(r["correction_std_max"] for r in runs)} if ranges else None
    out["optimizer_steps_per_batch"] = statistics.fmean(r["optimizer_steps_per_batch"] for r in runs)
    out["step_seconds"] = statistics.fmean(r["step_seconds"] for r in runs)
    out["wall_seconds"] = sum(r["wall_seconds"] for r in runs)
    out["wall_unrecorded"] = sum(r["wall_unrecorded"] for r in runs)
    return out


def summarize(args):
    """{env: {lr: {"methods": {method: summary}, "pairs": [...], "missing": [...], "machines": {...}, "resumed":
    {...}}}} from the runs on disk. A method's row uses its finished seeds; a pair uses the seeds both finished.
    The family's adjustment and the verdicts come after, in results()."""
    out = {}
    for env in args.envs:
        for lr in args.lrs:
            runs, missing = {}, []
            for method in args.methods:
                for seed in range(args.seeds):
                    folder = run_dir(args, env, lr, method, seed)
                    if done(folder, args.shared["steps"]):
                        runs.setdefault(method, {})[seed] = read_run(folder)
                    else:
                        missing.append(f"{method} seed {seed}")
            if not runs:
                continue
            pairs = []
            for x, y, question in PAIRS:
                seeds = sorted(set(runs.get(x, {})) & set(runs.get(y, {})))
                if len(seeds) >= 2:
                    pairs.append({"x": x, "y": y, "question": question,
                                  **stats.pair_summary([runs[x][s] for s in seeds], [runs[y][s] for s in seeds],
                                                       METRICS)})
            every = [run for r in runs.values() for run in r.values()]
            out.setdefault(env, {})[f"{lr:g}"] = {
                "methods": {m: {**method_summary([r[s] for s in sorted(r)]), "seed_ids": sorted(r),
                                "mean_curve": _mean_curve([r[s]["eval_curve"] for s in sorted(r)])}
                            for m, r in runs.items()},
                "pairs": pairs, "missing": missing,
                # what the runs recorded: each invocation's machine; and which runs resumed, from which steps
                "machines": dict(sorted(Counter(i for r in every for i in r["machines"]).items())),
                "resumed": dict(sorted(Counter(r["resumed"] for r in every).items()))}
    return out


def _mean_curve(curves):
    points = {}
    for curve in curves:
        for x, y in curve:
            points.setdefault(x, []).append(y)
    return [[x, statistics.fmean(ys)] for x, ys in sorted(points.items())]


# ----------------------------------------------------------------------------- the report
def _ci(v, digits=2):
    return f"{v['mean']:.{digits}f} [{v['mean_ci'][0]:.{digits}f}, {v['mean_ci'][1]:.{digits}f}]"


def _pair_row(p, m):
    v, lo_hi = p[m], lambda ci: f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
    reading = {"X > Y": "**X > Y**", "X < Y": "**X < Y**", "too few seeds": "too few seeds to call"}.get(
        v["verdict"], f"not measurable with {p['seeds']} seeds")
    adjusted = (f"{v['t_p_holm']:.3f} | {v['wilcoxon_p']:.4f} | {v['wilcoxon_p_holm']:.3f}" if "t_p_holm" in v
                else f"- | {v['wilcoxon_p']:.4f} | -")
    return (f"| {p['x']} | {p['y']} | {p['question']} | {p['seeds']} | {v['diff']:+.3f} | {lo_hi(v['diff_ci'])} | "
            f"{lo_hi(v['t_ci'])} | {v['t_p']:.4f} | {adjusted} | {v['p_improvement']:.2f} "
            f"[{v['p_improvement_ci'][0]:.2f}, {v['p_improvement_ci'][1]:.2f}] | {reading} |")


def recorded(summary, key):
    """Over every env and lr: how many invocations (machines) or runs (resumed) recorded each value."""
    counts = Counter()
    for by_lr in summary.values():
        for s in by_lr.values():
            counts.update(s[key])
    return "; ".join(f"{k} ({n})" for k, n in sorted(counts.items()))


def _label(env, lr, one_lr):
    return env + ("" if one_lr else f", lr {lr}")


def _comparisons(summary):
    """Every paired comparison of the report: (key, env, lr, pair, metric), in the report's order."""
    one_lr = all(len(by_lr) == 1 for by_lr in summary.values())
    return [(f"{_label(env, lr, one_lr)}, {m}: {p['x']} - {p['y']}", env, lr, p, m) for env, by_lr in summary.items()
            for lr, s in by_lr.items() for p in s["pairs"] for m in METRICS]


def leave_one_seed_out(summary):
    """Per seed: every comparison's paired t-test redone without that seed (in every comparison: as if it had never
    run), Holm-adjusted over the family again. Gives the adjusted p the called differences would have, and which
    comparisons the adjusted p would call then (the intervals, which can only withhold a call, not recomputed)."""
    comparisons = _comparisons(summary)
    called = [key for key, *_, p, m in comparisons if p[m]["verdict"] in ("X > Y", "X < Y")]
    seeds = sorted({i for by_lr in summary.values() for s in by_lr.values() for m in s["methods"].values()
                    for i in m["seed_ids"]})
    out = []
    for drop in seeds if len(seeds) > stats.MIN_SEEDS else ():
        keys, ps = [], []
        for key, env, lr, p, m in comparisons:
            ms = summary[env][lr]["methods"]
            x, y = (dict(zip(ms[k]["seed_ids"], ms[k][m]["per_seed"])) for k in (p["x"], p["y"]))
            both = sorted(set(x) & set(y) - {drop})
            if len(both) >= stats.MIN_SEEDS:
                keys.append(key)
                ps.append(stats.t_test([x[i] - y[i] for i in both])["t_p"])
        adjusted = dict(zip(keys, stats.holm(ps)))
        out.append({"seed": drop, "family": len(keys), "called_t_p_holm": {k: adjusted.get(k) for k in called},
                    "t_p_holm_below_alpha": {k: v for k, v in adjusted.items() if v < stats.ALPHA}})
    return out


def wilcoxon_floor(summary, family):
    """Whether the exact Wilcoxon test could call anything in this family: with n seeds (n nonzero differences at
    most) its two-sided p is never below 2/2^n, and Holm multiplies the family's smallest p by the family's size."""
    n = max((p["seeds"] for *_, p, m in _comparisons(summary) if p["seeds"] >= stats.MIN_SEEDS), default=0)
    if not family:
        return "- the exact Wilcoxon test: no comparison has enough seeds"
    floor = 2 / 2 ** n
    return (f"- the exact Wilcoxon test, beside: with {n} seeds its smallest possible two-sided p is 2/2^{n} = "
            f"{floor:.5f}, and Holm multiplies the family's smallest p by {family}: at best {family * floor:.3f}, "
            + ("above 0.05, so after the family's control it can call nothing here, whatever the runs"
               if family * floor >= stats.ALPHA else "below 0.05, so it could call a difference here"))


def run_time(summary):
    """The run time of every run, summed over every env and lr, and the invocations it cannot count."""
    per = [(_label(env, lr, all(len(b) == 1 for b in summary.values())), s["methods"])
           for env, by_lr in summary.items() for lr, s in by_lr.items()]
    total = sum(m["wall_seconds"] for _, ms in per for m in ms.values())
    unrecorded = [f"{where} {method} ({m['wall_unrecorded']})" for where, ms in per for method, m in ms.items()
                  if m["wall_unrecorded"]]
    return (f"- run time: {total / 3600:.2f} h in all (every invocation's seconds in wall.json, summed: "
            + ", ".join(f"{where} {sum(m['wall_seconds'] for m in ms.values()) / 3600:.2f} h" for where, ms in per)
            + ")" + (f"; not counted: the invocations killed before wall.json kept a heartbeat, which recorded no "
                     f"seconds: {', '.join(unrecorded)}" if unrecorded else ""))


def _numbers(v):
    return (f"{v['diff']:+.3f} (bootstrap [{v['diff_ci'][0]:+.3f}, {v['diff_ci'][1]:+.3f}], t [{v['t_ci'][0]:+.3f}, "
            f"{v['t_ci'][1]:+.3f}], Holm p {v['t_p_holm']:.3f})")


def called_lines(results):
    """The called differences: each with its numbers, its control at equal optimizer steps (STEP_MATCHED) and the
    Holm p it would have with any one seed left out (results["leave_one_seed_out"])."""
    summary, loo = results["summary"], results["leave_one_seed_out"]
    comparisons = _comparisons(summary)
    called = [(key, env, lr, p, m) for key, env, lr, p, m in comparisons if p[m]["verdict"] in ("X > Y", "X < Y")]
    lines = ["## What the rule calls", ""]
    if not called:
        return lines + [f"Nothing: no difference is called by the rule over these {results['family']} comparisons.", ""]
    lines.append(f"{len(called)} of the family's {results['family']} comparisons called:")
    lines.append("")
    for key, env, lr, p, m in called:
        lines.append(f"- **{key}** ({p['question']}): {p[m]['verdict']}, {_numbers(p[m])}.")
        control = STEP_MATCHED.get((p["x"], p["y"]))
        twin = next((q for q in summary[env][lr]["pairs"] if (q["x"], q["y"]) == control), None)
        if twin:
            ms = summary[env][lr]["methods"]
            steps = ", ".join(f"{k} {ms[k]['optimizer_steps_per_batch']:g}" for k in (p["y"], p["x"], twin["y"]))
            reading = twin[m]["verdict"] if twin[m]["verdict"] in ("X > Y", "X < Y") else "not measurable"
            lines.append(f"  Its control at equal optimizer steps, {twin['x']} - {twin['y']} ({twin['question']}): "
                         f"{_numbers(twin[m])}, {reading}. Optimizer steps per batch: {steps}: "
                         + ("the called difference may be the number of optimizer steps, not the turn-by-turn order."
                            if reading == "not measurable" else f"called at equal steps too ({reading})."))
        held = {r["seed"]: r["called_t_p_holm"][key] for r in loo if r["called_t_p_holm"][key] is not None}
        lost = ", ".join(f"{seed} ({v:.3f})" for seed, v in held.items() if v >= stats.ALPHA)
        if held:
            lines.append(f"  With any one seed left out of every comparison (Holm redone over the family) its Holm p "
                         f"is {min(held.values()):.3f}-{max(held.values()):.3f}: "
                         + (f"the call is lost without any one of seeds {lost}." if lost
                            else "it stays below 0.05 without any one seed."))
    others = [f"without seed {r['seed']}, {k} (Holm p {v:.3f})" for r in loo
              for k, v in r["t_p_holm_below_alpha"].items() if k not in {c[0] for c in called}]
    if others:
        lines.append(f"- Not called with every seed, but with a Holm p below 0.05 when one seed is left out: "
                     f"{'; '.join(others)}.")
    return lines + [""]


def report_lines(args, results):
    shared, summary = args.shared, results["summary"]
    lines = [f"# SeeUPO vs ablations and the all-turns update, regime `{args.regime}` (`bench/compare.py`)", "",
             "- runs recorded on (wall.json, per invocation: CPU, torch threads per run, runs at a time; how many "
             f"invocations): {recorded(summary, 'machines')}; resumed (args.json; how many runs): "
             f"{recorded(summary, 'resumed')}",
             f"- shared setting (every method): {' '.join(f'--{k} {v}' for k, v in shared.items())}; everything "
             f"else train.py's defaults; " + (f"the baselines add `{' '.join(args.setting['baselines'])}`"
                                              if args.setting["baselines"] else "the baselines too"),
             "- paired seeds: seed s draws the same tasks and starts from the same tiny model for every method",
             "- final: held-out success at the end (64 held-out tasks x 2 episodes); AUC: the mean held-out success "
             "over the run (area under the curve of evaluations every "
             f"{shared['eval_every']} steps, trapezoidal in sampled episodes); to 0.8: sampled episodes until held-out "
             "success first reaches 0.8, interpolated (median over the runs that do, and how many)",
             "- per method: mean and IQM (the mean of the middle half of the runs), 95% percentile-bootstrap intervals "
             "over seeds (scipy.stats.bootstrap, 10,000 resamples, seed 0); per pair: the mean paired difference X - Y, "
             "its bootstrap and paired-t 95% intervals, the paired t-test's p and the exact Wilcoxon signed-rank p, "
             f"each also Holm-adjusted over the family of all {results['family']} comparisons below; P(X>Y): "
             "rliable's probability of improvement over all pairs of runs",
             f"- the rule: {stats.RULE}",
             wilcoxon_floor(summary, results["family"]),
             run_time(summary), ""]
    lines += called_lines(results)
    for env, by_lr in summary.items():
        for lr, s in by_lr.items():
            ms = s["methods"]
            wall = sum(m["wall_seconds"] for m in ms.values())
            unrecorded = sum(m["wall_unrecorded"] for m in ms.values())
            lines += [f"## {env}, lr {lr}", "",
                      f"{sum(m['seeds'] for m in ms.values())} runs finished"
                      + (f"; missing: {', '.join(s['missing'])}" if s["missing"] else "")
                      + f"; {wall / 3600:.2f} h of run time in all (every invocation's seconds, summed)"
                      + (f", and {unrecorded} killed invocation(s) that recorded no seconds" if unrecorded else ""),
                      "",
                      "| method | seeds | final: mean [95% CI] | final: IQM | AUC: mean [95% CI] | AUC: IQM | to 0.8 "
                      "| opt steps | KL end | s/step |",
                      "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
            for method, m in ms.items():
                reached = m["to_80"]
                lines.append(f"| {method} | {m['seeds']} | {_ci(m['final'])} | {m['final']['iqm']:.2f} | {_ci(m['auc'])} "
                             f"| {m['auc']['iqm']:.2f} | "
                             + (f"{reached['median']:.0f} ({reached['reached']})" if reached["median"] else "- (0)")
                             + f" | {m['optimizer_steps_per_batch']:.0f} | {m['kl_end'][0]:.3f} | {m['step_seconds']:.1f} |")
            lines += ["", "Per seed (final held-out success, seeds in order):", ""]
            lines += [f"- {method}: {' '.join(f'{v:.2f}' for v in m['final']['per_seed'])}" for method, m in ms.items()]
            corrections = {k: m["correction"] for k, m in ms.items() if m["correction"]}
            if corrections:
                lines += ["", "The correction M_j per turn and step (the range of its mean over the turn's samples; "
                          "its largest std): " + "; ".join(
                              f"{k} {c['mean_range'][0]:.3f}-{c['mean_range'][1]:.3f}, std <= {c['std_max']:.3f}"
                              for k, c in corrections.items())]
            for m in METRICS if s["pairs"] else ():
                lines += ["", f"Paired differences X - Y of the {METRICS[m]} (seeds both finished):", "",
                          "| X | Y | question | seeds | X - Y | bootstrap 95% CI | t 95% CI | t p | t p, Holm | "
                          "Wilcoxon p | Wilcoxon p, Holm | P(X>Y) [CI] | reading |",
                          "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
                lines += [_pair_row(p, m) for p in s["pairs"]]
            png = f"curves_{env}_lr{lr}.png"
            lines += ["", f"![{png}]({png})"] if os.path.exists(os.path.join(args.out, png)) else []
            lines.append("")
    if os.path.exists(os.path.join(args.out, "differences.png")):
        lines += ["## Every paired difference", "", "![differences.png](differences.png)", ""]
    return lines


def plot(args, summary):
    """Per env and lr the curves of every method (support.plots.plot_runs); and differences.png (plot_differences)."""
    from support.plots import plot_runs
    try:
        import matplotlib
        matplotlib.use("Agg")
    except ImportError:
        print("no matplotlib: no plots (pip install -r requirements.txt)")
        return
    for env, by_lr in summary.items():
        for lr, s in by_lr.items():
            groups = {m: [run_dir(args, env, float(lr), m, seed) for seed in range(args.seeds)
                          if done(run_dir(args, env, float(lr), m, seed), args.shared["steps"])] for m in s["methods"]}
            plot_runs(groups, os.path.join(args.out, f"curves_{env}_lr{lr}.png"))
    plot_differences(summary, os.path.join(args.out, "differences.png"))


def plot_differences(summary, png):
    """Every paired difference: its mean, bootstrap (thick) and t (thin) 95% intervals, in colour where the rule
    calls it; one panel per env (and lr) and metric."""
    import matplotlib.pyplot as plt
    panels = [(env + (f", lr {lr}" if len(by_lr) > 1 else ""), m, s["pairs"]) for env, by_lr in summary.items()
              for lr, s in by_lr.items() if s["pairs"] for m in METRICS]
    if not panels:
        return
    rows, cols = max(len(pairs) for _, _, pairs in panels), len(METRICS)
    fig, axes = plt.subplots(len(panels) // cols, cols, figsize=(11, (0.28 * rows + 0.9) * len(panels) // cols),
                             squeeze=False, sharey="row")
    colour = {"X > Y": "tab:blue", "X < Y": "tab:red"}
    for ax, (where, m, pairs) in zip(axes.flat, panels):
        for k, p in enumerate(pairs):
            c = colour.get(p[m]["verdict"], "grey")
            ax.plot(p[m]["t_ci"], [k, k], color=c, lw=1)
            ax.plot(p[m]["diff_ci"], [k, k], color=c, lw=5, alpha=0.5, solid_capstyle="butt")
            ax.plot([p[m]["diff"]], [k], "o", color="black", ms=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(pairs)), [f"{p['x']} - {p['y']}" for p in pairs], fontsize=9)
        ax.set_ylim(len(pairs) - 0.5, -0.5)
        ax.set_title(f"{where}: {'final held-out success' if m == 'final' else m.upper()}, X - Y", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Paired differences over seeds: mean (dot), 95% bootstrap (thick) and t (thin) intervals; "
                 "blue / red: called by the rule, grey: not measurable", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def results(args):
    """What results.json holds, and its text: a pure function of the committed runs (tests/test_compare.py)."""
    summary = summarize(args)
    family = stats.control_family([p for by_lr in summary.values() for s in by_lr.values() for p in s["pairs"]],
                                  METRICS)
    out = {"regime": args.regime, "shared": args.shared, "envs": args.envs, "lrs": args.lrs, "methods": args.methods,
           "seeds": args.seeds, "rule": stats.RULE, "alpha": stats.ALPHA, "family": family,
           "leave_one_seed_out": leave_one_seed_out(summary), "summary": summary}
    return out, json.dumps(out, indent=1)


def report(args, wall):
    out, text = results(args)
    if not out["summary"]:
        raise SystemExit(f"error: no finished runs in {args.out}; run without --report first")
    plot(args, out["summary"])
    command = " ".join(["python bench/compare.py", *[a for a in sys.argv[1:] if a != "--report"]])
    header = [f"- command: `{command}`; report written {datetime.date.today()}"
              + (f"; this invocation trained for {wall / 60:.0f} min" if wall else "")]
    lines = report_lines(args, out)
    lines[1:1] = header
    with open(os.path.join(args.out, "results.json"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {args.out}/results.md, results.json, *.png")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--regime", choices=list(REGIMES), default="authors")
    p.add_argument("--quick", action="store_true", help="seeupo, gspo, gspo x T; seeds 0-1; lookup; the first lr; 50 "
                   "steps (at a constant lr, the first 50 steps of the full runs)")
    p.add_argument("--envs", nargs="+", choices=sorted(envs.ENVS), default=list(ENVS))
    p.add_argument("--lrs", nargs="+", type=float, help="learning rates (default: the regime's)")
    p.add_argument("--methods", nargs="+", help="default: the regime's")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the regime's)")
    p.add_argument("--steps", type=int, help="override the regime's steps (a smoke test)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--report", action="store_true", help="no training: re-read the finished runs")
    p.add_argument("--out", help="default: bench/results/compare/REGIME (--quick: .../REGIME/quick)")
    args = p.parse_args(argv)
    args.setting = REGIMES[args.regime]
    args.lrs, args.seeds = args.lrs or list(args.setting["lrs"]), args.seeds or args.setting["seeds"]
    args.methods = args.methods or list(args.setting["methods"])
    args.out = args.out or os.path.join(ROOT, "bench", "results", "compare", args.regime,
                                        *(["quick"] if args.quick else []))
    override = {}
    if args.quick:
        args.envs, args.lrs, args.seeds, override = ["lookup"], args.lrs[:1], 2, {"steps": 50}
        args.methods = ["seeupo", "gspo", "gspo x T"] if args.methods == list(args.setting["methods"]) else args.methods
    if args.steps:
        override["steps"] = args.steps
    for method in args.methods:
        try:
            method_flags(method, 2, args.setting)
        except KeyError:
            raise SystemExit(f"error: unknown method {method!r}: method_flags() lists them (each also with "
                             f"' per-turn': one Adam state per turn)")
    args.shared = {**args.setting["shared"], **override}  # what every run of this invocation shares
    return args


def main():
    args = parse_args()
    start = time.time()
    if not args.report:
        runs = plan(args)
        print(f"{len(runs)} runs into {args.out} ({args.jobs} at a time); finished runs are kept and skipped")
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(train, args, *r) for r in runs]
            for future in tqdm(as_completed(futures), total=len(futures), dynamic_ncols=True):
                future.result()
    report(args, 0 if args.report else time.time() - start)


if __name__ == "__main__":
    main()
