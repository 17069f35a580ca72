"""Measurement: success rate and pass@k on held-out tasks, for the base policy and a trained adapter.

    python eval.py --adapter runs/default/adapter              # base vs adapter, side by side
    python eval.py --env guess --samples 8 --k 1 4 8

`evaluate()` is the one function every measurement goes through: train.py calls it for the held-out
`eval_success_rate`, bench/compare.py for its table. It samples `samples` episodes of each task with
rollout(), exactly as training does (same temperature), and returns per-task success counts; `summarize`
turns counts into the success rate (the mean over all episodes) and the unbiased pass@k estimator.
The base policy is the same model with the adapter disabled: one copy of the weights for both columns.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Literal

import torch

import envs
from rollout import Sampling, load_policy, rollout


def evaluate(policy, env_name, tasks, samples, sampling, seed=0, reference=False, env_kwargs=None):
    """Per-task success counts over `samples` episodes each (and the episodes, for transcripts)."""
    torch.manual_seed(seed)  # the same draws for every evaluation: curves compare like with like
    episodes = rollout(policy, env_name, tasks, samples, sampling, env_kwargs, reference=reference)
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


@dataclass
class EvalArgs:
    env: Literal[tuple(envs.ENVS)] = field(default="lookup", metadata={"help": "environment"})
    model: str = field(default="tiny", metadata={"help": "base model: tiny, a Hub name or a local folder"})
    adapter: str = field(default="", metadata={"help": "a saved adapter folder (train.py's OUT/adapter)"})
    tasks: int = field(default=200, metadata={"help": "held-out tasks to evaluate (the first N of the test split)"})
    samples: int = field(default=4, metadata={"help": "episodes per task"})
    k: list[int] = field(default_factory=lambda: [1, 4], metadata={"help": "pass@k for these k (<= samples)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (0 = greedy)"})
    max_new_tokens: int = field(default=16, metadata={"help": "most tokens per turn"})
    max_context: int = field(default=1024, metadata={"help": "most tokens per episode"})
    thinking: bool = field(default=False, metadata={"help": "Qwen3: let the model think"})
    seed: int = field(default=0, metadata={"help": "seed of the tiny model and of the sampling"})
    out: str = field(default="", metadata={"help": "write the results as JSON here"})


def main():
    from transformers import HfArgumentParser
    args = HfArgumentParser(EvalArgs).parse_args_into_dataclasses()[0]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    policy = load_policy(args.model, seed=args.seed, adapter=args.adapter or None, thinking=args.thinking, device=device)
    tasks = envs.make_env(args.env).tasks("test")[: args.tasks]
    sampling = Sampling(temperature=args.temperature, max_new_tokens=args.max_new_tokens, max_context=args.max_context)
    columns = {"base": True, "adapter": False} if args.adapter else {"base": True}
    results = {}
    for name, reference in columns.items():
        counts, _ = evaluate(policy, args.env, tasks, args.samples, sampling, args.seed, reference)
        results[name] = summarize(counts, args.samples, args.k)
    keys = [k for k in results["base"] if k not in ("tasks", "samples")]
    print(f"{args.env}: {len(tasks)} held-out tasks x {args.samples} samples, temperature {args.temperature}")
    print(f"{'':14}" + "".join(f"{name:>10}" for name in results))
    for key in keys:
        print(f"{key:14}" + "".join(f"{results[name][key]:10.3f}" for name in results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
