"""What one warm-up step of tiny.py's build costs at the real vocabulary: tiny (V = 233) vs tiny-qwen
(V = 151,936), with the log-softmax over every column on every row: Policy._score before issue 28 (bench/
vocab_memory.py's full_logits) and today's. (This is why tiny.warm_up_qwen pays only the shown tokens' columns.)

    python bench/warmup_cost.py          # writes bench/results/warmup_cost.md (a few minutes on 2 CPU cores)

One step is tiny.build_tiny's loop body, run here as it runs there (tiny.py is imported, not changed):
TINY_WARMUP["episodes"] episodes of uniformly random well-formed actions on training tasks of one toy
environment (the build cycles lookup, guess, relay), played by a rollout.ScriptedPolicy through the model's
chat template (tiny-qwen: Qwen3's, thinking off as rollout.load_policy's default), then a next-token loss on
every token of the transcripts through Policy.turn_logprobs and one AdamW step on EVERY weight (no LoRA; at
V = 151,936 the untied embedding and output layer are 19.4M weights each, 99% of the model). Reported per
environment: the transcripts' tokens, the time of the rollout and of the update (forward, backward, step;
median of --repeats; the update also in CPU seconds of this process, which other processes sharing the cores
do not inflate), and the update's peak memory (bench/speed.py's: live torch tensor bytes above the
step's start, weights excluded; AdamW's moments are created by the first step, before the measurement).
The [B, L, V] float32 log-softmax of full_logits at V = 151,936 is 0.6 MB a token: --full_episodes caps
the episodes full_logits is measured on, so that the box is not run out of memory (memory scales with it).
"""

import argparse
import datetime
import os
import platform
import random
import statistics
import tempfile
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
from support import qwen_offline  # noqa: E402
from rollout import Actions, Policy, SamplingArgs, rollout  # noqa: E402
from seeupo import ALL_TURNS, TurnSample  # noqa: E402
from speed import mib, peak_memory  # noqa: E402
from support.tiny import TINY_QWEN_CONFIG, TINY_WARMUP, ScriptedPolicy, tiny_model, tiny_tokenizer  # noqa: E402
from vocab_memory import use  # noqa: E402


def warmup_episodes(policy, env_cls, n, rng):
    """n episodes of random well-formed actions, as build_tiny plays them."""
    actor = ScriptedPolicy(policy.tokenizer, lambda episode: episode.env.random_action(rng), policy.chat_kwargs)
    return rollout(actor, env_cls, rng.sample(env_cls.tasks("train"), n), group_size=1, sampling=SamplingArgs())


def warmup_update(policy, optimizer, episodes):
    """build_tiny's update: next-token loss on whole transcripts, one optimizer step."""
    every = [list(range(1, len(e.token_ids))) for e in episodes]
    logp, mask = policy.turn_logprobs([TurnSample(j, ALL_TURNS, len(e.token_ids), Actions(e.token_ids, len(e.token_ids), q, q))
                                       for j, (e, q) in enumerate(zip(episodes, every))])
    loss = -(logp * mask).sum() / mask.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "tiny-qwen"], choices=["tiny", "tiny-qwen"])
    p.add_argument("--episodes", type=int, default=TINY_WARMUP["episodes"])
    p.add_argument("--full_episodes", type=int, default=16, help="at most this many for full_logits on tiny-qwen")
    p.add_argument("--scorers", nargs="+", default=["full_logits", "today"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "warmup_cost.md"))
    args = p.parse_args()
    started = time.time()
    out = ["# One warm-up step at the real vocabulary (`bench/warmup_cost.py`)", "",
           f"- command: `python {' '.join(sys.argv)}`",
           f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; CPU ({platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores); torch {torch.__version__}",
           f"- tiny.py's warm-up: {TINY_WARMUP['steps']} steps of {TINY_WARMUP['episodes']} episodes, AdamW lr "
           f"{TINY_WARMUP['lr']}; random-init models; times: median of {args.repeats}", "",
           "| model | V | env | episodes | tokens (mean / padded longest) | scorer | rollout | update | "
           "update CPU time | peak memory of the update |", "|---|--:|---|--:|--:|---|--:|--:|--:|--:|"]
    print("\n".join(out), flush=True)
    for model_name in args.models:
        if model_name == "tiny":
            tokenizer = tiny_tokenizer(args.seed)
            model = tiny_model(tokenizer, args.seed)
        else:
            folder = qwen_offline.build(os.path.join(tempfile.mkdtemp(), "tiny-qwen"), args.seed, TINY_QWEN_CONFIG)  # random init
            tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
        policy = Policy(model, tokenizer, chat_kwargs={"enable_thinking": False})
        optimizer = torch.optim.AdamW(model.parameters(), lr=TINY_WARMUP["lr"])
        V = model.get_output_embeddings().out_features
        for env_name, env_cls in envs.ENVS.items():
            for scorer in args.scorers:
                n = args.episodes if scorer != "full_logits" or V < 10**4 else min(args.episodes, args.full_episodes)
                use(policy, scorer)
                rng = random.Random(args.seed)
                rollouts, updates, cpus = [], [], []
                for _ in range(args.repeats + 1):  # the first: AdamW's moments and first-call allocations
                    start = time.perf_counter()
                    episodes = warmup_episodes(policy, env_cls, n, rng)
                    rollouts.append(time.perf_counter() - start)
                    start, start_cpu = time.perf_counter(), time.process_time()
                    warmup_update(policy, optimizer, episodes)
                    updates.append(time.perf_counter() - start)
                    cpus.append(time.process_time() - start_cpu)
                peak = peak_memory(lambda: warmup_update(policy, optimizer, episodes), "cpu")
                lengths = [len(e.token_ids) for e in episodes]
                line = (f"| {model_name} | {V} | {env_name} | {n} | {statistics.mean(lengths):.0f} / {max(lengths)} | "
                        f"{scorer} | {statistics.median(rollouts[1:]):.2f} s | {statistics.median(updates[1:]):.2f} s | "
                        f"{statistics.median(cpus[1:]):.2f} s | {mib(peak)} |")
                out.append(line)
                print(line, flush=True)
        use(policy, "today")
    out += ["", f"wall {time.time() - started:.0f} s"]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
