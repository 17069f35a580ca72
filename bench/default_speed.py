"""The README's command against an earlier commit's, side by side on this machine (a benchmark, not a test).

    python bench/default_speed.py --baseline 3920300            # issue 42's "today": the default before it
    python bench/default_speed.py --report                      # redraw the table from the runs kept

Each side runs exactly `accelerate launch train.py --out DIR` (no other flag: the default recipe, the default
thread count), twice a repeat: first on an empty cache (SEEUPO_CACHE a fresh folder: the tiny model's build is
inside its wall time), then again on the cache that run left (the model cached). The baseline runs from a git
worktree of --baseline with the same Python environment; the two sides alternate, repeat after repeat, so that
a drift of the machine falls on both. Nothing else should run meanwhile: the timings are the point.

Writes OUT/{baseline,current}/repeatK/{first,cached}/ (each run's metrics.jsonl, log.txt, wall.json), then
OUT/results.md and results.json (wall seconds and final held-out success of every run; medians; ratios).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seeds import ROOT, cpu_model, drop_weights, held_out  # noqa: E402 -- bench/ scripts are run as files


def one_run(workdir, out, cache):
    """`accelerate launch train.py` in workdir with SEEUPO_CACHE=cache; writes out/wall.json when done."""
    if os.path.exists(os.path.join(out, "wall.json")):
        return json.load(open(os.path.join(out, "wall.json")))
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cmd = ["accelerate", "launch", "train.py", "--out", os.path.join(out, "run")]
    start = time.time()
    with open(os.path.join(out, "log.txt"), "w") as log:
        code = subprocess.call(cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "SEEUPO_CACHE": cache})
    if code:
        raise SystemExit(f"error: {out}: train.py exited {code}; see {out}/log.txt")
    evals = held_out(os.path.join(out, "run"))
    result = {"seconds": time.time() - start, "evals": evals, "final": evals[-1][1]}
    drop_weights(os.path.join(out, "run"))
    json.dump(result, open(os.path.join(out, "wall.json"), "w"))
    return result


def report(out, baseline):
    runs = {}
    for side in ("baseline", "current"):
        for repeat in sorted(os.listdir(os.path.join(out, side))) if os.path.isdir(os.path.join(out, side)) else []:
            for kind in ("first", "cached"):
                path = os.path.join(out, side, repeat, kind, "wall.json")
                if os.path.exists(path):
                    runs.setdefault((side, kind), []).append(json.load(open(path)))
    median = {key: statistics.median(r["seconds"] for r in rs) for key, rs in runs.items()}
    lines = [f"# `accelerate launch train.py`, this checkout against {baseline} (`bench/default_speed.py`)", "",
             f"- CPU: {cpu_model()}, {os.cpu_count()} cores, the default thread count; {time.strftime('%Y-%m-%d')}; "
             "the sides alternated, one run at a time", "",
             "| side | run | wall (each repeat) | median | final held-out (each) |", "|---|---|---|--:|---|"]
    for (side, kind), rs in sorted(runs.items()):
        lines.append(f"| {side} | {'empty cache (build included)' if kind == 'first' else 'model cached'} | "
                     + ", ".join(f"{r['seconds']:.1f} s" for r in rs) + f" | {median[side, kind]:.1f} s | "
                     + ", ".join(f"{r['final']:.3f}" for r in rs) + " |")
    for kind in ("first", "cached"):
        if ("baseline", kind) in median and ("current", kind) in median:
            lines.append(f"\n- {kind}: current / baseline = **{median['current', kind] / median['baseline', kind]:.2f}**"
                         " (medians)")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"baseline": baseline, "cpu": cpu_model(),
                   "runs": {f"{s}/{k}": rs for (s, k), rs in runs.items()}}, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baseline", default="3920300", help="the commit to compare with (default: before issue 42)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--report", action="store_true", help="no runs: redraw the table")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "default_speed"))
    args = p.parse_args()
    if not args.report:
        tree = os.path.join(args.out, "baseline_tree")
        if not os.path.isdir(tree):
            subprocess.check_call(["git", "worktree", "add", "--detach", tree, args.baseline], cwd=ROOT)
        try:
            for k in range(args.repeats):
                for side, workdir in (("baseline", tree), ("current", ROOT)):
                    folder = os.path.join(args.out, side, f"repeat{k}")
                    cache = os.path.join(folder, "cache")
                    if not os.path.exists(os.path.join(folder, "first", "wall.json")):
                        shutil.rmtree(cache, ignore_errors=True)  # the first run's cache starts empty
                    for kind in ("first", "cached"):
                        print(f"[{time.strftime('%H:%M:%S')}] {side}, repeat {k}: {kind}", flush=True)
                        one_run(workdir, os.path.join(folder, kind), cache)
                    shutil.rmtree(cache, ignore_errors=True)
        finally:
            subprocess.call(["git", "worktree", "remove", "--force", tree], cwd=ROOT)
    report(args.out, args.baseline)


if __name__ == "__main__":
    main()
