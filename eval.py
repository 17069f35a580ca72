"""Measurement: success rate and pass@k on held-out tasks (base policy and a trained adapter side by side),
transcripts of episodes, and plots of finished runs.

    python eval.py --adapter runs/default/adapter              # base vs adapter, a small table
    python eval.py --adapter runs/default/adapter --show 2     # ...and two held-out episodes of each
    python eval.py --env bfcl --adapter DIR/adapter            # per BFCL category + the multi-turn mean
    python eval.py --env my_env.py:MyEnv --tasks tasks.jsonl --reward my_env.py:reward --adapter DIR/adapter
                                                               # a class of yours, with train.py's flags for it
    python eval.py --adapter runs/default/adapter --json eval.json   # ...and the table as JSON, for scripts
    python eval.py --plot runs/default                         # runs/default/plot.png from metrics.jsonl

`evaluate()` is the one function every measurement goes through: train.py calls it for the held-out
`eval_success_rate`, bench/compare.py through train.py. It samples `samples` episodes of each task with
rollout(), exactly as training does (the same environment factory), and returns per-task success counts;
`summarize` turns counts into the success rate (the mean over all episodes) and the unbiased pass@k
estimator. The base policy is the same model with the adapter disabled: one copy of the weights for both
columns. `transcript()` renders an episode from the token ids that were trained on; `plot_runs()` draws
metrics.jsonl files (one run, or several per method with a band across them). EvalArgs inherits the
policy's and sampling's flags from rollout.PolicyArgs and SamplingArgs, as train.Args does: the same names,
defaults and help.
"""

import gzip
import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch

import envs
from rollout import PolicyArgs, SamplingArgs, check_context, load_policy, rollout
from seeupo import ALL_TURNS, knob
from tiny import model_path
from user_env import EnvArgs, resolve_env


def evaluate(policy, env_factory, tasks, samples, sampling, seed=0, reference=False):
    """Per-task success counts over `samples` episodes each, and the episodes (for transcripts).
    env_factory() returns a fresh environment, as rollout() takes it; seed: the run's --seed."""
    torch.manual_seed(seed + 1)  # the same draws for every evaluation (curves compare like with like), and not
    # step 0's training draws (train.step_seeds: seed * 1_000_003 + rank)
    episodes = rollout(policy, env_factory, tasks, samples, sampling, reference=reference)
    counts = [0] * len(tasks)
    for e in episodes:
        counts[e.group] += e.success
    return counts, episodes


def pass_at_k(n, c, k):
    """Unbiased pass@k from n samples with c successes: 1 - C(n-c, k) / C(n, k)."""
    return 1.0 if n - c < k else 1.0 - math.comb(n - c, k) / math.comb(n, k)


def summarize(counts, samples, ks=(1,)):
    out = {"tasks": len(counts), "samples": samples, "success_rate": sum(counts) / (len(counts) * samples)}
    for k in ks:
        if k <= samples:
            out[f"pass@{k}"] = sum(pass_at_k(samples, c, k) for c in counts) / len(counts)
    return out


def transcript(episode, tokenizer, color=False):
    """An episode as a conversation, decoded from the token ids trained on. The policy's own tokens -- the
    only ones that carry loss -- are shown between >>> and <<< (green with color=True)."""
    on, off = ("\033[32m", "\033[0m") if color else (">>>", "<<<")
    ids, parts, last = episode.token_ids, [], 0
    for start, end in episode.turn_spans:
        parts += [tokenizer.decode(ids[last:start]), on + tokenizer.decode(ids[start:end]) + off]
        last = end
    parts.append(tokenizer.decode(ids[last:]))
    flags = [f"{n} {what}" for n, what in [(episode.malformed, "malformed turns"),
                                            (episode.unterminated, "unterminated turns")] if n]
    end = f"\n[ended: {episode.outcome}] reward {episode.reward:g}, {'success' if episode.success else 'failure'}"
    return "".join(parts) + end + (f" ({', '.join(flags)})" if flags else "")


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
    for name in set().union(*series):
        points = [dict(s.get(name, [])) for s in series]
        xs = sorted(set.intersection(*[set(p) for p in points]))
        if xs:
            out[name] = (xs, [[p[x] for p in points] for x in xs])
    return out


@dataclass
class EvalArgs(SamplingArgs, PolicyArgs, EnvArgs):  # --temperature, --qlora, --max_context, --env, ...: as train.py's
    model: str = knob("tiny", "base model: tiny, tiny-qwen, a Hub name or a local folder")
    adapter: str = knob("", "a saved adapter folder (train.py's OUT/adapter)")
    eval_tasks: int = knob(200, "held-out tasks to evaluate (the first N of the test split)")
    samples: int = knob(4, "episodes per task")
    k: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "pass@k for these k (<= samples)"})
    categories: list[str] = field(default_factory=lambda: list(envs.BFCL_CATEGORIES), metadata={"help": "BFCL categories"})
    seed: int = knob(0, "seed of the tiny model and of the sampling")
    show: int = knob(0, "print this many held-out episodes of each policy")
    plot: str = knob("", "plot this run folder's metrics.jsonl to DIR/plot.png, and stop")
    json: str = knob("", "also write the table as JSON to this file: {'results': {env or BFCL category: {column: "
                         "{'success_rate', 'pass@k', 'tasks', 'samples'}}}, 'args': these flags}")


def main(argv=None):
    """Prints the table; returns it as the JSON of --json holds it (for notebooks: eval.main([...]))."""
    from transformers import HfArgumentParser
    args, rest = HfArgumentParser(EvalArgs).parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if rest:
        raise SystemExit(f"error: unknown argument {rest[0]} (eval.py --help lists them)")
    if args.plot:
        print(plot_runs({"": [args.plot]}, os.path.join(args.plot, "plot.png")))
        return
    variants = {args.env: {}}  # BFCL: each category on its own
    if args.env == "bfcl":
        variants = {c: {"category": c, "max_tool_output": args.max_tool_output} for c in args.categories}
    loaded = {label: resolve_env(args, args.model == "tiny", **kwargs) for label, kwargs in variants.items()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(model_path(args.model, args.seed, next(iter(loaded.values()))), args, seed=args.seed,
                         adapter=args.adapter or None, device=device)
    columns = {"base": True, "adapter": False} if args.adapter else {"base": True}
    results, shown = {}, {}
    for label, env_loaded in loaded.items():
        label = label if args.env == "bfcl" else env_loaded.name  # a class of yours: its name, not its path
        env_factory, env = env_loaded.factory, env_loaded.factory()
        tasks = env_loaded.test_tasks[: args.eval_tasks]
        check_context(policy, env, tasks[0], args)
        for name, reference in columns.items():
            counts, episodes = evaluate(policy, env_factory, tasks, args.samples, args, args.seed, reference)
            results.setdefault(label, {})[name] = summarize(counts, args.samples, args.k)
            shown[name] = episodes[:: args.samples][: args.show]  # the first sample of the first tasks
        for i in range(args.show):
            for name in columns:
                print(f"\n===== {label} held-out task {i}, {name} policy =====")
                print(transcript(shown[name][i], policy.tokenizer, color=os.isatty(1)))
    if args.env == "bfcl":  # the leaderboard's multi-turn score: the unweighted mean over categories
        results["multi_turn_mean"] = {name: {"success_rate": sum(results[c][name]["success_rate"] for c in variants)
                                             / len(variants)} for name in columns}
    print(f"\n{args.env}: {args.eval_tasks} held-out tasks (at most) x {args.samples} samples, temperature "
          f"{args.temperature}")
    print(f"{'':36}" + "".join(f"{name:>10}" for name in columns))
    for label, by_column in results.items():
        for key in by_column["base"]:
            if key not in ("tasks", "samples"):
                row = f"{label if len(results) > 1 else ''} {key}".strip()
                print(f"{row:36}" + "".join(f"{by_column[name][key]:10.3f}" for name in columns))
    table = {"results": results, "args": asdict(args)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1)
    return table


if __name__ == "__main__":
    main()
