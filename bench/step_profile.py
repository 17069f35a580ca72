"""Where a default training step's time goes (never run by CI).

    python bench/step_profile.py --threads 1 2        # writes bench/results/step_profile.md

Runs train.main() in this process, the default recipe with the tiny model cached, for --steps steps (the
held-out evaluations at step 0 and at the end included, as the default's every 10 steps are), under cProfile,
once per --threads value, and splits the wall time of the training loop by the functions it runs inside:

  the rollout   rollout() as training calls it: Policy.generate (sampling) and the environments
  the sweep     seeupo.sweep(): forward passes (Policy._score), backward(), optimizer steps
  evaluation    eval.evaluate() (its own sampling and environments: 128 tasks x 2 episodes each time)
  bookkeeping   step_metrics, metrics.jsonl, checkpoints, the progress line

The parts are cumulative times of the named functions (cProfile's), so a part holds what runs beneath it (an
indented part is inside the one above it). Build time is not in it (the model is built first, outside).
"""

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train  # noqa: E402
from bench.seeds import cpu_model  # noqa: E402
from support import tiny  # noqa: E402

PARTS = [  # (part, [(file, function), ...]): the cumulative time of those functions
    ("rollout in training (sampling and environments)", [("rollout.py", "rollout", "train.py")]),
    ("  Policy.generate, every call (training's and evaluation's)", [("rollout.py", "generate", "")]),
    ("  environments' reset and step, prompts and replies rendered", [("envs.py", "reset", ""), ("envs.py", "step", ""),
                                                                      ("rollout.py", "render_prompt", ""),
                                                                      ("rollout.py", "render_reply", "")]),
    ("sweep (all of it)", [("seeupo.py", "sweep", "")]),
    ("  forward passes (Policy._score, with and without a gradient)", [("rollout.py", "_score", "")]),
    ("  backward", [("_tensor.py", "backward", "")]),
    ("  optimizer steps and gradient clipping", [("optimizer.py", "wrapper", ""),
                                                 ("clip_grad.py", "clip_grad_norm_", "")]),
    ("evaluation (evaluate: its sampling and environments)", [("eval.py", "evaluate", "")]),
    ("bookkeeping (step_metrics, metrics lines, checkpoints, the line)", [("train.py", "step_metrics", ""),
                                                                          ("run_files.py", "log", ""),
                                                                          ("run_files.py", "save", ""),
                                                                          ("train.py", "show", "")]),
    ("train.main (all of it)", [("train.py", "main", "")]),
]


def cumulative(stats, file, function, caller_file):
    """The cumulative seconds of `function` in `file`; with caller_file, only of its calls from that file."""
    total = 0.0
    for (path, _, name), (_, _, _, ct, callers) in stats.stats.items():
        if name == function and path.endswith(os.sep + file):
            total += ct if not caller_file else sum(v[3] for (cpath, _, _), v in callers.items()
                                                    if cpath.endswith(os.sep + caller_file))
    return total


def profile(threads, steps):
    out = tempfile.mkdtemp()
    argv = ["--steps", str(steps), "--cpu_threads", str(threads), "--out", out, "--save_every", "0"]
    profiler = cProfile.Profile()
    profiler.runcall(train.main, argv)
    stats = pstats.Stats(profiler)
    return {part: sum(cumulative(stats, *where) for where in pairs) for part, pairs in PARTS}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "step_profile.md"))
    args = p.parse_args()
    tiny.build("tiny", 0)  # outside the profile
    rows = []
    for threads in args.threads:
        rows.append((threads, profile(threads, args.steps)))
        print(threads, {k.strip(): round(v, 1) for k, v in rows[-1][1].items()}, flush=True)
    lines = [f"# Where a default step's time goes (`python bench/step_profile.py --threads "
             f"{' '.join(map(str, args.threads))} --steps {args.steps}`)", "",
             f"- CPU: {cpu_model()}, {os.cpu_count()} cores; "
             f"{time.strftime('%Y-%m-%d')}; the default recipe, seed 0, tiny cached, {args.steps} steps of 128 "
             f"episodes with the held-out evaluations at step 0 and at the end (128 tasks x 2 episodes each)",
             "- seconds of the whole train.main() (cProfile's cumulative time of each part; a part holds what runs "
             "beneath it)", "",
             "| part | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t, _ in rows) + " |",
             "|---|" + "--:|" * len(rows)]
    for part, _ in PARTS:
        lines.append(f"| {part} | " + " | ".join(f"{r[part]:.1f} s" for _, r in rows) + " |")
    lines.append(f"| a training step (train.main less the evaluations, / {args.steps}) | " + " | ".join(
        f"{(r['train.main (all of it)'] - r[PARTS[-3][0]]) / args.steps:.2f} s" for _, r in rows) + " |")
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
