"""SeeUPO against its baselines and ablations on the toy environments (a benchmark, not a test).

    python bench/compare.py                     # the authors' schedule: 9 methods x 3 lrs x 2 seeds, then 5 seeds
                                                #   at each method's best lr; lookup + relay (162 runs)
    python bench/compare.py --full_grid         # 5 seeds at every lr (270 runs)
    python bench/compare.py --quick             # seeupo, gspo, gspo x T; seeds 0-1; lookup; the first lr; 50 steps
    python bench/compare.py --regime 16step     # the second regime: 16 clipped optimizer steps per turn
    python bench/compare.py --report            # only re-read the finished runs: the tables and the curves

Every run is `python train.py` with ONE shared setting per regime (REGIMES below, fixed before the comparison
and the same for every method: only a method's own flags and the learning rate differ), so every method
samples the same number of episodes from the same task draws and seeds. Two stages:
  scan     every method at every learning rate of the regime's scan, seeds 0..SCAN_SEEDS-1;
  confirm  each method at its own best lr of the scan (the highest mean final held-out success over the scan
           seeds; a tie goes to the smaller lr) on seeds SCAN_SEEDS..SEEDS-1, so its row has SEEDS seeds of
           which SEEDS - SCAN_SEEDS did not take part in choosing the lr. `--full_grid` runs every seed at
           every lr instead. The tables give each method at each lr and each method at its own best lr.

Regimes (seeupo.sweep() runs every method; see its docstring):
  authors   the authors' released schedule: ONE optimizer step per turn per batch for the sweeps, ONE per batch
            for the all-turns baselines, which are theirs: one sample per turn (a ratio per turn), group-std
            division, no batch normalisation (`--baseline_samples turn --std_norm --no_batch_norm`); KL 0.002;
            a constant lr.
  16step    this project's own regime (the default recipe's update): 4 epochs x 4 minibatches (16 clipped
            steps per turn), KL 0.05, our baselines (one whole-episode sample, batch normalisation), 25 steps,
            seeds 0-2 at every lr (bench/results/compare/16step/).

Methods:
  seeupo          reverse turn order + the correction M (the paper's method)
  forward         turn order 1..T, with the correction          (ablation: the order)
  random          a random turn order each step, with it        (ablation: the order)
  no-correction   reverse order, M = 1                          (ablation: the correction)
  gspo, grpo      all turns at once: sequence-level / token-level clipped loss
  gspo x T, grpo x T  the same with T x as many minibatches: as many optimizer steps per batch as the sweep
                  takes (T = the env's turns). The control that separates the order and the correction from
                  the number of optimizer steps: the paper does not run it.
  reinforce       all turns at once, no ratio and no clip, leave-one-out baseline (RLOO-style)

Measured per method (over seeds): final held-out success (mean, std, per seed); sampled episodes until held-out
success first reaches 50% and 80% of the optimum (the median over the seeds that reach it, and how many do);
collapses (runs whose held-out success rose by >= 0.2 above the start and ended within 0.1 of the start); the
KL to the base model at the end.

Results: OUT/REGIME/ENV/lrLR/METHOD/seedS/ holds each run's own --out (metrics.jsonl, adapter, log.txt). A run
whose adapter exists is done and is not run again, and a run cut off resumes from its checkpoint: start the
script again and it continues where it stopped. A finished run shorter than the regime's --steps (the regime
was lengthened) is extended from its last checkpoint, which at a constant lr gives the very run a longer one
would have been: a step's draws depend on the seed and the step alone (train.py --resume records the new
--steps in the run's args.json). Then OUT/REGIME/results.md,
results.json and one PNG per env and lr, drawn by eval.plot_runs() (needs matplotlib: pip install
matplotlib==3.11.2).
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402
from seeds import cpu_model  # noqa: E402  (bench/seeds.py)

THEIR_BASELINES = ["--baseline_samples", "turn", "--std_norm", "--no_batch_norm"]
# Each regime's shared setting, chosen before its comparison ran (the lr scan included) and never per method.
REGIMES = {
    "authors": dict(shared=dict(steps=80, tasks_per_step=8, group_size=8, ppo_epochs=1, minibatches=1, kl_coef=0.002,
                                lr_scheduler_type="constant", eval_every=10, eval_tasks=64, eval_samples=2,
                                save_every=20),
                    lrs=(1e-3, 3e-3, 1e-2), baselines=THEIR_BASELINES, seeds=5, scan_seeds=2),
    "16step": dict(shared=dict(steps=25, tasks_per_step=8, group_size=8, ppo_epochs=4, minibatches=4, kl_coef=0.05,
                               eval_every=5, eval_tasks=64, eval_samples=2, save_every=5),
                   lrs=(1e-3, 3e-3), baselines=[], seeds=3, scan_seeds=3),
}
ENVS = ("lookup", "relay")


def methods(turns, regime):
    """{method: its own train.py flags}: the only flags that differ between the methods of a regime."""
    base, mb = regime["baselines"], regime["shared"]["minibatches"]
    return {
        "seeupo": [],
        "forward": ["--order", "sequential"],
        "random": ["--order", "random"],
        "no-correction": ["--no_correction"],
        "gspo": ["--algo", "gspo", *base],
        "gspo x T": ["--algo", "gspo", *base, "--minibatches", str(mb * turns)],
        "grpo": ["--algo", "grpo", *base],
        "grpo x T": ["--algo", "grpo", *base, "--minibatches", str(mb * turns)],
        "reinforce": ["--algo", "reinforce", *base],
    }


def plan(args, seeds_at):
    """[(env, lr, method, seed, flags)]: seeds_at(env, method, lr) gives the seeds to run there."""
    runs = []
    for env in args.envs:
        table = methods(envs.ENVS[env]().max_turns, args.setting)
        for lr in args.lrs:
            for method in args.methods or table:
                runs += [(env, lr, method, seed, table[method]) for seed in seeds_at(env, method, lr)]
    return runs


def best_lrs(args, scan, partial=False):
    """{(env, method): its best lr}: the highest mean final held-out success over the scan seeds (ties: the
    smaller lr). partial (--report): choose among the lrs whose scan is finished, and list the missing ones."""
    summary, best, missing = summarize(args, finished(args, scan)), {}, set()

    def score(env, method, lr):
        return summary[env][f"{lr:g}"][method]["final_success"][0]

    for env, lr, method, _, _ in scan:
        m = summary.get(env, {}).get(f"{lr:g}", {}).get(method)
        if m is None or m["seeds"] < args.scan_seeds:
            if not partial:
                raise SystemExit(f"error: the scan of {method} on {env} at lr {lr:g} is not finished")
            missing.add(f"{env} lr {lr:g}")
        elif (env, method) not in best or m["final_success"][0] > score(env, method, best[env, method]):
            best[env, method] = lr
    return best, sorted(missing)


def run_dir(args, env, lr, method, seed):
    return os.path.join(args.out, env, f"lr{lr:g}", method.replace(" ", ""), f"seed{seed}")


def train(args, env, lr, method, seed, flags):
    """One train.py run (resumed if it was cut off); returns its folder. Its log is in the folder."""
    out = run_dir(args, env, lr, method, seed)
    shared = args.shared
    extend = False
    if os.path.exists(os.path.join(out, "args.json")):  # never mix runs of another setting into the table
        held = json.load(open(os.path.join(out, "args.json")))
        wanted = {**{k: v for k, v in shared.items() if f"--{k}" not in flags}, "lr": lr, "seed": seed}  # x T: its own
        # a shorter finished run at a constant lr is extended: a step's draws depend on the seed and step alone,
        # so it continues exactly as a run of the longer length would have (checked once by hand)
        extend = held.get("steps", 0) < shared["steps"] and shared.get("lr_scheduler_type") == "constant"
        if any(held.get(k) != v for k, v in wanted.items() if not (extend and k == "steps")):
            raise SystemExit(f"error: {out} holds a run with other settings than {wanted}; choose another --out")
    if os.path.exists(os.path.join(out, "adapter")) and not extend:
        return out
    resume = ["--resume"] if os.path.exists(os.path.join(out, "checkpoint")) else []
    if not resume:
        shutil.rmtree(out, ignore_errors=True)  # a run killed before its first checkpoint: start it afresh
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--env", env, "--lr", str(lr), "--seed", str(seed),
           "--out", out, "--cpu_threads", str(args.threads),
           *[x for k, v in shared.items() for x in (f"--{k}", str(v))], *flags, *resume]
    with open(os.path.join(out, "log.txt"), "a") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{out} failed (exit {done.returncode}); see {out}/log.txt")
    return out


# ----------------------------------------------------------------------------- reading finished runs
def finished(args, runs):
    """The runs that are done and as long as the regime's (not a shorter run still to be extended)."""
    def done(folder):
        return (os.path.exists(os.path.join(folder, "adapter"))
                and json.load(open(os.path.join(folder, "args.json")))["steps"] == args.shared["steps"])
    return [r for r in runs if done(run_dir(args, *r[:4]))]


def read_run(folder):
    train_records, evals = [], []
    for line in open(os.path.join(folder, "metrics.jsonl")):
        r = json.loads(line)
        (evals if "eval_success_rate" in r else train_records).append(r)
    episodes, x = 0, {0: 0}
    for r in train_records:
        episodes += r["episodes"]
        x[r["step"]] = episodes
    curve = [(x[r["step"]], r["eval_success_rate"]) for r in evals]
    start, values = curve[0][1], [y for _, y in curve]
    return {
        "final_success": values[-1],
        "eval_curve": curve,
        "to_50": next((e for e, y in curve if y >= 0.5), None),  # the optimum is 1.0 on every toy env
        "to_80": next((e for e, y in curve if y >= 0.8), None),
        "collapsed": max(values) >= start + 0.2 and values[-1] <= start + 0.1,
        "optimizer_steps_per_batch": statistics.fmean(r["optimizer_steps"] for r in train_records),
        "kl_final": train_records[-1]["kl"],
        "seconds": sum(r["step_seconds"] for r in train_records),
    }


def mean_std(values):
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def reached(values):
    """(median over the runs that got there, how many did)."""
    hits = [v for v in values if v is not None]
    return (statistics.median(hits) if hits else None), len(hits)


def summarize(args, runs):
    """{env: {lr: {method: summary over seeds}}} of finished runs."""
    out = {}
    for env, lr, method, seed, _ in runs:
        out.setdefault(env, {}).setdefault(f"{lr:g}", {}).setdefault(method, []).append(
            read_run(run_dir(args, env, lr, method, seed)))
    for env, by_lr in out.items():
        for lr, by_method in by_lr.items():
            for method, seeds in by_method.items():
                curve = {}  # the mean over seeds of the held-out curve
                for s in seeds:
                    for x, y in s["eval_curve"]:
                        curve.setdefault(x, []).append(y)
                by_method[method] = {
                    "seeds": len(seeds),
                    "final_success": mean_std([s["final_success"] for s in seeds]),
                    "per_seed_final": [s["final_success"] for s in seeds],
                    "to_50": reached([s["to_50"] for s in seeds]),
                    "to_80": reached([s["to_80"] for s in seeds]),
                    "collapsed": sum(s["collapsed"] for s in seeds),
                    "optimizer_steps_per_batch": statistics.fmean(s["optimizer_steps_per_batch"] for s in seeds),
                    "kl_final": statistics.fmean(s["kl_final"] for s in seeds),
                    "seconds": statistics.fmean(s["seconds"] for s in seeds),
                    "mean_curve": sorted((x, statistics.fmean(ys)) for x, ys in curve.items()),
                }
    return out


def _episodes(point):
    median, n = point
    return "-" if median is None else f"{median:.0f} ({n})"


def _row(method, m, lr=None):
    cells = [method, *([lr] if lr is not None else []),
             f"{m['final_success'][0]:.3f} +- {m['final_success'][1]:.3f}",
             " ".join(f"{v:.2f}" for v in m["per_seed_final"]), _episodes(m["to_50"]), _episodes(m["to_80"]),
             f"{m['collapsed']}/{m['seeds']}", f"{m['optimizer_steps_per_batch']:.0f}", f"{m['kl_final']:.3f}"]
    return "| " + " | ".join(cells) + " |"


def report(args, runs, summary, best, missing, wall):
    from eval import plot_runs
    results = os.path.join(args.out, "results.json")
    if args.report and os.path.exists(results):  # keep the wall time of the invocation that trained
        wall = json.load(open(results)).get("wall_seconds", wall)
    shared = args.shared
    command = " ".join(["python bench/compare.py", *[a for a in sys.argv[1:] if a != "--report"]])
    header = ("| method | held-out success | per seed | to 50% | to 80% | collapsed | opt steps | KL end |",
              "|---|--:|--:|--:|--:|--:|--:|--:|")
    lines = [f"# SeeUPO vs baselines and ablations, regime `{args.regime}` (`bench/compare.py`)", "",
             f"- command: `{command}`",
             f"- {datetime.datetime.now():%Y-%m-%d}; {cpu_model()}, {os.cpu_count()} cores; {args.jobs} runs at a "
             f"time, {args.threads} torch thread each; wall {wall / 60:.0f} min",
             f"- shared setting (every method): {' '.join(f'--{k} {v}' for k, v in shared.items())}; everything else "
             f"train.py's defaults; " + (f"the baselines add `{' '.join(args.setting['baselines'])}`"
                                         if args.setting['baselines'] else "the baselines too"),
             "- held-out success: at the end, on the env's test tasks, mean +- std over seeds; to 50% / 80%: sampled "
             "episodes until a run's held-out success first reaches 0.5 / 0.8 (median over the runs that do, and "
             "how many); collapsed: rose by >= 0.2, ended within 0.1 of the start; opt steps: optimizer steps per "
             "batch"]
    for env, by_lr in summary.items():
        seeds = {lr: sorted({m["seeds"] for m in by_method.values()}) for lr, by_method in by_lr.items()}
        lines += [f"- {env}, runs finished: " + "; ".join(
            f"lr {lr}: {len(by_lr[lr])} methods x {'-'.join(map(str, n))} seeds" for lr, n in seeds.items())]
    if missing:
        lines += [f"- the scan is not finished at: {', '.join(missing)}; a best lr is chosen among the finished lrs"]
    lines.append("")
    for env, by_lr in summary.items():
        best_lr = {method: f"{lr:g}" for (e, method), lr in best.items() if e == env}  # chosen on the scan seeds
        lines += [f"## {env}: every method at its own best lr (chosen on seeds 0-{args.scan_seeds - 1})", "",
                  header[0].replace("| held-out", "| lr | held-out"), header[1] + "--:|"]
        lines += [_row(method, by_lr[lr][method], lr) for method, lr in
                  sorted(best_lr.items(), key=lambda kv: -by_lr[kv[1]][kv[0]]["final_success"][0])]
        lines.append("")
        for lr, by_method in by_lr.items():
            top = max(by_method.values(), key=lambda m: m["final_success"][0])["mean_curve"]
            flat = f"{top[-2][1]:.2f} -> {top[-1][1]:.2f}" if len(top) > 1 else "-"
            lines += [f"### {env}, lr {lr} (the best method's mean held-out curve, last two evaluations: {flat})", "",
                      *header]
            lines += [_row(method, m) for method, m in
                      sorted(by_method.items(), key=lambda kv: -kv[1]["final_success"][0])]
            png = os.path.join(args.out, f"compare_{env}_lr{lr}.png")
            try:
                groups = {}
                for e, l, method, seed, _ in runs:
                    if e == env and f"{l:g}" == lr:
                        groups.setdefault(method, []).append(run_dir(args, e, l, method, seed))
                plot_runs(groups, png)
                lines += ["", f"![{env} lr {lr}]({os.path.basename(png)})"]
            except SystemExit as e:  # no matplotlib: the table is still written
                print(e)
            lines.append("")
    with open(results, "w") as f:
        json.dump({"command": command, "wall_seconds": wall, "regime": args.regime, "shared": shared,
                   "best_lr": {f"{env} {method}": lr for (env, method), lr in best.items()}, "scan_missing": missing,
                   "baselines": args.setting["baselines"], "summary": summary}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written: {args.out}/results.md, results.json, compare_*.png")


def execute(args, runs, stage):
    print(f"{stage}: {len(runs)} runs into {args.out} ({args.jobs} at a time); finished runs are kept and skipped")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(train, args, *r) for r in runs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=stage, dynamic_ncols=True):
            future.result()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--regime", choices=list(REGIMES), default="authors")
    p.add_argument("--quick", action="store_true", help="seeupo, gspo, gspo x T; seeds 0-1; lookup; the scan's "
                   "first lr; 50 steps (at a constant lr, the first 50 steps of the full runs)")
    p.add_argument("--envs", nargs="+", choices=sorted(envs.ENVS), default=list(ENVS))
    p.add_argument("--lrs", nargs="+", type=float, help="learning rates (default: the regime's scan)")
    p.add_argument("--methods", nargs="+", choices=list(methods(2, REGIMES["authors"])))
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 at each method's best lr (default: the regime's)")
    p.add_argument("--scan_seeds", type=int, help="seeds 0..N-1 at every lr (default: the regime's; at most --seeds)")
    p.add_argument("--full_grid", action="store_true", help="every seed at every lr (--scan_seeds = --seeds)")
    p.add_argument("--steps", type=int, help="override the regime's steps (a smoke test)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--report", action="store_true", help="no training: re-read the finished runs")
    p.add_argument("--out", help="default: bench/results/compare/REGIME (--quick: .../REGIME/quick)")
    args = p.parse_args()
    args.setting, args.override = REGIMES[args.regime], {}
    args.lrs, args.seeds = args.lrs or args.setting["lrs"], args.seeds or args.setting["seeds"]
    args.scan_seeds = min(args.seeds, args.scan_seeds or args.setting["scan_seeds"])
    if args.full_grid:
        args.scan_seeds = args.seeds
    args.out = args.out or os.path.join(ROOT, "bench", "results", "compare", args.regime, *(["quick"] if args.quick else []))
    if args.quick:
        args.envs, args.lrs, args.seeds, args.scan_seeds = ["lookup"], args.lrs[:1], 2, 2
        args.methods, args.override = args.methods or ["seeupo", "gspo", "gspo x T"], {"steps": 50}
    if args.steps:
        args.override["steps"] = args.steps
    args.shared = {**args.setting["shared"], **args.override}  # what every run of this invocation shares
    start = time.time()
    scan = plan(args, lambda *_: range(args.scan_seeds))  # every method at every lr
    if not args.report:
        execute(args, scan, "scan")
    best, missing = best_lrs(args, scan, partial=args.report)  # --report on an unfinished scan: what there is
    if not args.report:
        execute(args, plan(args, lambda env, method, lr: range(args.scan_seeds if best[env, method] == lr else
                                                                   args.seeds, args.seeds)), "confirm")
    # the tables show every finished run of the grid, also seeds beyond the scan at other lrs (--full_grid)
    runs = finished(args, plan(args, lambda *_: range(args.seeds)))
    summary = summarize(args, runs)
    if not summary:
        raise SystemExit(f"error: no finished runs in {args.out}; run without --report first")
    report(args, runs, summary, best, missing, time.time() - start)


if __name__ == "__main__":
    main()
