"""Measurement: success rate and pass@k on held-out tasks (base policy and a trained adapter side by side),
and transcripts of episodes.

    python eval.py --adapter runs/default/adapter              # base vs adapter, a small table
    python eval.py --adapter runs/default/adapter --show 2     # ...and two held-out episodes of each
    python eval.py --env bfcl --adapter DIR/adapter            # per BFCL category + the multi-turn mean
    python eval.py --env my_env.py:MyEnv --tasks tasks.jsonl --reward my_env.py:reward --adapter DIR/adapter
                                                               # a class of yours (train.py's flags for it)
    python eval.py --adapter runs/default/adapter --json eval.json   # ...and the table as JSON, for scripts
    python eval.py --plot runs/default                         # runs/default/plot.png (support/plots.py)

`evaluate()` is the one function every measurement goes through: train.py calls it for the held-out
`eval_success_rate`, bench/compare.py through train.py. It samples `samples` episodes of each task with
rollout(), exactly as training does (the same environment factory), and returns per-task success counts;
`summarize` turns counts into the success rate (the mean over all episodes) and the unbiased pass@k
estimator. The base policy is the same model with the adapter disabled: one copy of the weights for both
columns. `transcript()` renders an episode from the token ids that were trained on. EvalArgs inherits the
policy's and sampling's flags from rollout.PolicyArgs and SamplingArgs, as train.Args does: the same names,
defaults and help.
"""

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch

from rollout import PolicyArgs, SamplingArgs, load_policy, rollout
from seeupo import knob
from support import bfcl, tiny
from support.limits import check_limits
from support.plots import plot_runs
from support.user_env import EnvArgs, resolve_env


def evaluate(policy, env_factory, tasks, samples, sampling, seed=0, reference=False):
    """Per-task success counts over `samples` episodes each, and the episodes (for transcripts).
    env_factory() returns a fresh environment, as rollout() takes it; seed: the run's --seed."""
    # the same draws for every evaluation (curves compare like with like), and not step 0's training draws
    # (train.step_seeds: seed * 1_000_003 + rank)
    torch.manual_seed(seed + 1)
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
    end = (f"\n[ended: {episode.outcome}] reward {episode.reward:g}, "
           f"{'success' if episode.success else 'failure'}")
    return "".join(parts) + end + (f" ({', '.join(flags)})" if flags else "")


# --temperature, --qlora, --max_context, --env, ...: as train.py's
@dataclass
class EvalArgs(SamplingArgs, PolicyArgs, EnvArgs):
    model: str = knob("", "base model: tiny, tiny-qwen, a Hub name or a local folder ('': the one --adapter "
                          "was trained on, else tiny)")
    adapter: str = knob("", "a saved adapter folder (train.py's OUT/adapter)")
    eval_tasks: int = knob(200, "held-out tasks to evaluate (the first N of the test split)")
    samples: int = knob(4, "episodes per task")
    k: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "pass@k for these k (<= samples)"})
    categories: list[str] = field(default_factory=lambda: list(bfcl.CATEGORIES),
                                  metadata={"help": "BFCL categories"})
    seed: int = knob(-1, "seed of the tiny model and of the sampling (-1: the one --adapter was trained "
                         "with, else 0)")
    show: int = knob(0, "print this many held-out episodes of each policy")
    plot: list[str] = field(default_factory=list, metadata={
        "help": "plot these run folders' metrics.jsonl, and stop: one to DIR/plot.png, several overlaid in "
                "compare.png"})
    json: str = knob("", "also write the table as JSON to this file: {'results': {env or BFCL category: "
                         "{column: {'success_rate', 'pass@k', 'tasks', 'samples'}}}, 'args': these flags}")


def main(argv=None):
    """Prints the table; returns it as the JSON of --json holds it (for notebooks: eval.main([...]))."""
    from transformers import HfArgumentParser
    args, rest = HfArgumentParser(EvalArgs).parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if rest:
        raise SystemExit(f"error: unknown argument {rest[0]} (eval.py --help lists them)")
    if args.plot:
        runs = {os.path.basename(os.path.normpath(d)) if len(args.plot) > 1 else "": [d] for d in args.plot}
        png = os.path.join(args.plot[0], "plot.png") if len(args.plot) == 1 else "compare.png"
        print(plot_runs(runs, png))
        return
    model, seed = tiny.trained_with(args.adapter) if args.adapter else ("tiny", 0)  # its base, by default
    seed = args.seed if args.seed >= 0 else seed or 0
    args = dataclasses.replace(args, model=args.model or model, seed=seed)
    variants = {args.env: args}  # BFCL: each category on its own
    if args.env == "bfcl":
        variants = {c: dataclasses.replace(args, bfcl_category=c) for c in args.categories}
    loaded = {label: resolve_env(flags, args.model == "tiny") for label, flags in variants.items()}
    for env_loaded in loaded.values():
        check_limits(args, env_loaded)  # before any model, from the tokenizer alone
    device = "cuda" if torch.cuda.is_available() else "cpu"
    first = next(iter(loaded.values()))
    wanted = tiny.folder(args.model, args.seed, first) if args.model in tiny.EMBEDDED else args.model
    base = tiny.own_base(args.adapter, wanted) if args.adapter else wanted  # never another base, silently
    if base == wanted and args.model in tiny.EMBEDDED:
        tiny.build(args.model, args.seed, first)  # once (minutes, with a progress bar), then cached
    print(f"base model: {base}")
    policy = load_policy(base, args, seed=args.seed, adapter=args.adapter or None, device=device)
    columns = {"base": True, "adapter": False} if args.adapter else {"base": True}
    results, shown = {}, {}
    for label, env_loaded in loaded.items():
        label = label if args.env == "bfcl" else env_loaded.name  # a class of yours: its name, not its path
        env_factory = env_loaded.factory
        tasks = env_loaded.test_tasks[: args.eval_tasks]
        for name, reference in columns.items():
            counts, episodes = evaluate(policy, env_factory, tasks, args.samples, args, args.seed, reference)
            results.setdefault(label, {})[name] = summarize(counts, args.samples, args.k)
            shown[name] = episodes[:: args.samples][: args.show]  # the first sample of the first tasks
        for i in range(min(args.show, len(tasks))):
            for name in columns:
                print(f"\n===== {label} held-out task {i}, {name} policy =====")
                print(transcript(shown[name][i], policy.tokenizer, color=os.isatty(1)))
    if args.env == "bfcl":  # the leaderboard's multi-turn score: the unweighted mean over categories
        results["multi_turn_mean"] = {name: {"success_rate": sum(results[c][name]["success_rate"]
                                                                 for c in variants) / len(variants)}
                                      for name in columns}
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
