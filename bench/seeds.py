"""One configuration over several seeds and thread counts: does it learn every time? (a benchmark, not a test)

    python bench/seeds.py                                   # the default run, seeds 0-4, 1 and 2 threads
    python bench/seeds.py --seeds 3 --threads 1 -- --lr 3e-3 --steps 40    # any train.py flags after --
    python bench/seeds.py --report --out bench/results/seeds/default      # redraw the table and the PNG

Each run is exactly what a user types, `accelerate launch train.py --seed S --cpu_threads T ...`, from a cold
cache (its own SEEUPO_CACHE, so the tiny model's build is inside its wall time). Runs go several at a time:
as many as fit the machine's cores at T threads each (`--cores`), so a 1-thread run shares the CPU with
another and a 2-thread run on 2 cores has it alone. Floating-point paths differ between thread counts (and
CPU kinds), and RL amplifies such differences: a recipe is only as good as its worst seed.

Writes OUT/threadsT/seedS/ (the run's own --out: metrics.jsonl, log.txt, wall.json), then OUT/results.md and
results.json (held-out success at every evaluation, wall time, and the median and worst final success) and
OUT/curves.png. A finished run (wall.json written) is kept and skipped: start it again to continue.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def one_run(out, seed, threads, flags, cache=None):
    """`accelerate launch train.py` from a cold cache (or the shared `cache`, kept); writes out/wall.json."""
    if os.path.exists(os.path.join(out, "wall.json")):
        return
    shutil.rmtree(out, ignore_errors=True)  # an unfinished run starts afresh: its wall time must be whole
    os.makedirs(out)
    cmd = ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "train.py", "--seed", str(seed), "--cpu_threads", str(threads), "--out",
           os.path.join(out, "run"), *flags]
    env = {**os.environ, "SEEUPO_CACHE": cache or os.path.join(out, "cache")}
    start = time.time()
    with open(os.path.join(out, "log.txt"), "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # its rusage: the peak RSS of it and its children (the run)
        code = os.waitstatus_to_exitcode(status)
    if code:
        raise RuntimeError(f"{out}: train.py exited {code}; see {out}/log.txt")
    shutil.rmtree(os.path.join(out, "cache"), ignore_errors=True)  # the tiny model: ~4 MB a run
    drop_weights(os.path.join(out, "run"))
    with open(os.path.join(out, "wall.json"), "w") as f:
        json.dump({"seconds": time.time() - start, "seed": seed, "threads": threads, "flags": flags,
                   "peak_rss_mib": usage.ru_maxrss / 1024}, f)


def run_all(jobs, cores, cache=None):
    """Start each (out, seed, threads, flags) when its threads fit in the free cores; wait for all."""
    free, lock, done = [cores], threading.Condition(), []

    def work(job):
        try:
            one_run(*job, cache=cache)
        except Exception as e:  # noqa: BLE001 -- reported at the end, the other runs go on
            done.append(e)
        with lock:
            free[0] += min(job[2], cores)
            lock.notify_all()

    workers = []
    for k, job in enumerate(jobs):
        with lock:
            lock.wait_for(lambda: free[0] >= min(job[2], cores))
            free[0] -= min(job[2], cores)
        print(f"[{time.strftime('%H:%M:%S')}] run {k + 1}/{len(jobs)}: seed {job[1]}, {job[2]} thread(s)", flush=True)
        workers.append(threading.Thread(target=work, args=(job,)))
        workers[-1].start()
    for w in workers:
        w.join()
    if done:
        raise SystemExit(f"error: {len(done)} run(s) failed: {done[0]}")


def drop_weights(run):
    """A finished run folder less its adapter and checkpoint: the weights are not the record."""
    for folder in ("adapter", "checkpoint"):
        shutil.rmtree(os.path.join(run, folder), ignore_errors=True)


def held_out(run):
    """[(step, held-out success)] of a run folder's metrics.jsonl."""
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    return [(r["step"], r["eval_success_rate"]) for r in rows if "eval_success_rate" in r]


def read(out):
    evals = held_out(os.path.join(out, "run"))
    return {"evals": evals, "final": evals[-1][1], "seconds": json.load(open(os.path.join(out, "wall.json")))["seconds"]}


def report(args, flags):
    rows = {}
    for threads in args.threads:
        for seed in range(args.seeds):
            out = os.path.join(args.out, f"threads{threads}", f"seed{seed}")
            if os.path.exists(os.path.join(out, "wall.json")):
                rows[(threads, seed)] = read(out)
    if not rows:
        raise SystemExit(f"error: no finished runs in {args.out}")
    finals, walls = [r["final"] for r in rows.values()], [r["seconds"] for r in rows.values()]
    steps = sorted({s for r in rows.values() for s, _ in r["evals"]})
    command = "accelerate launch train.py " + " ".join(flags)
    lines = [f"# `{command.strip()}` over seeds and thread counts (`bench/seeds.py`)", "",
             f"- CPU: {cpu_model()}, {os.cpu_count()} cores; runs {args.cores} cores' worth at a time; "
             f"{time.strftime('%Y-%m-%d')}; "
             + ("one cache shared by the runs, kept (a seed's first run builds its model)" if args.cache else
                "each run from a cold cache (the tiny model's build included)"),
             f"- final held-out success over {len(rows)} runs: **median {statistics.median(finals):.2f}, "
             f"worst {min(finals):.2f}**, best {max(finals):.2f}; wall time median {statistics.median(walls) / 60:.1f} "
             f"min, longest {max(walls) / 60:.1f} min", "",
             "| threads | seed | " + " | ".join(f"@{s}" for s in steps) + " | wall |",
             "|--:|--:|" + "--:|" * len(steps) + "--:|"]
    for (threads, seed), r in sorted(rows.items()):
        at = dict(r["evals"])
        lines.append(f"| {threads} | {seed} | " + " | ".join(f"{at[s]:.2f}" if s in at else "" for s in steps)
                     + f" | {r['seconds'] / 60:.1f} min |")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"command": command, "cpu": cpu_model(), "runs": {f"threads{t}/seed{s}": r for (t, s), r in rows.items()},
                   "median_final": statistics.median(finals), "worst_final": min(finals)}, f, indent=1)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (threads, seed), r in sorted(rows.items()):
            ax.plot(*zip(*r["evals"]), marker=".", lw=1.2, color=f"C{seed}", ls="-" if threads == args.threads[0] else "--",
                    label=f"seed {seed}, {threads} thr")
        ax.set(xlabel="training step", ylabel="held-out success", ylim=(0, 1), title=command.strip()[:90])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "curves.png"), dpi=110)
        lines += ["", "![held-out success per run](curves.png)"]
    except ImportError:
        print("no matplotlib: no PNG (pip install matplotlib==3.11.2)")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    argv = sys.argv[1:]
    flags = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads per run (--cpu_threads)")
    p.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to fill with runs at once")
    p.add_argument("--report", action="store_true", help="no training: re-read the finished runs")
    p.add_argument("--cache", default=None, help="one SEEUPO_CACHE for every run, kept (a recipe search: each "
                   "seed's model built once, by its first run)")
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "seeds", "default"))
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if not args.report:
        jobs = [(os.path.join(args.out, f"threads{t}", f"seed{s}"), s, t, flags)
                for t in args.threads for s in range(args.seeds)]
        run_all(jobs, args.cores, args.cache and os.path.abspath(args.cache))
    report(args, flags)


if __name__ == "__main__":
    main()
