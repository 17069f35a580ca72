"""Plots of finished runs: curves from their metrics.jsonl files (eval.py --plot, train.py --plot, and
bench/compare.py's report), one run or several per label with a band across them.

  plot_runs(runs, png)   {label: [run dir, ...]} -> a PNG of six panels against sampled episodes
  read_metrics(run_dir)  a run's metrics.jsonl (or .jsonl.gz) as a list of records
"""

import gzip
import json
import os

from seeupo import ALL_TURNS


def plot_runs(runs, png):
    """Curves of runs, {label: [run dir, ...]} -> a PNG, against sampled episodes: the training reward, the
    held-out success, the spread of the correction M_j per turn, the KL to the base model, and per turn the
    sampling policy's entropy and the approximate KL of each update to it. With several runs for a label: their
    mean, and a band of +-1 std across them."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("error: plotting needs matplotlib: pip install matplotlib==3.11.2")
    fig, axes = plt.subplots(3, 2, figsize=(11, 11))
    panels = [(axes[0, 0], "reward_mean", "training reward"), (axes[0, 1], "eval_success_rate", "held-out success"),
              (axes[1, 0], "correction_std", "correction M_j: std per turn (0 = first)"), (axes[1, 1], "kl", "KL to base"),
              (axes[2, 0], "turn_entropy", "entropy of the sampling policy per token, per turn"),
              (axes[2, 1], "approx_kl", "approx. KL of the update to the sampling policy, per turn")]
    for label, dirs in runs.items():
        for ax, key, _ in panels:
            series = [_series(d, key) for d in dirs]
            for name, (x, ys) in _align(series).items():
                mean = [sum(col) / len(col) for col in ys]
                std = [(sum((v - m) ** 2 for v in col) / len(col)) ** 0.5 for col, m in zip(ys, mean)]
                line, = ax.plot(x, mean, label=f"{label}{name}", lw=1.5)
                if len(dirs) > 1:
                    low = [max(m - s, 1e-6) if key in LOG_AXES else m - s for m, s in zip(mean, std)]
                    ax.fill_between(x, low, [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)
    for ax, key, _ in panels:
        if key in LOG_AXES:
            ax.set_yscale("log")  # one step's KL spike would flatten the rest
    for ax, _, title in panels:
        ax.set_title(title)
        ax.set_xlabel("sampled episodes")
        ax.grid(alpha=0.3)
    for ax in axes.flat:
        if any(not line.get_label().startswith("_") for line in ax.get_lines()):  # "_child0": unlabelled
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    return png


LOG_AXES = ("kl", "approx_kl")


def read_metrics(run_dir):
    """A run's metrics.jsonl as a list of records (or metrics.jsonl.gz: bench/compare.py packs finished runs)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    with open(path) if os.path.exists(path) else gzip.open(path + ".gz", "rt") as f:
        return [json.loads(line) for line in f]


def _series(run_dir, key):
    """{name: [(sampled episodes, value)]} of one run; a per-turn key (the correction, the entropy, the approximate
    KL) gives one series per turn ("all": the all-turns baselines' one update)."""
    out, episodes = {}, 0
    for r in read_metrics(run_dir):
        episodes += r.get("episodes", 0)
        if key == "turn_entropy":
            per_turn = r.get(key, {})
        elif key in ("correction_std", "approx_kl"):
            per_turn = {t: s[key] for t, s in r.get("turn_stats", {}).items() if key in s}
        else:
            per_turn = None
        if per_turn is not None:
            for turn, value in per_turn.items():
                all_turns = turn == str(ALL_TURNS)  # the all-turns schedule's one update (it has no correction)
                if not (key == "correction_std" and all_turns):
                    out.setdefault(" all" if all_turns else f" turn {turn}", []).append((episodes, value))
        elif key in r:
            out.setdefault("", []).append((episodes, r[key]))
    return out


def _align(series):
    """Runs of one label -> {name: (x, [values of each run at x])}, over the x values all runs share."""
    out = {}
    for name in sorted(set().union(*series)):  # sorted: the legend's order, and the file, the same every time
        points = [dict(s.get(name, [])) for s in series]
        xs = sorted(set.intersection(*[set(p) for p in points]))
        if xs:
            out[name] = (xs, [[p[x] for p in points] for x in xs])
    return out
