"""What RL has to learn on `lookup`, and how fast a model can learn it when shown the answer: a probe of the
default `tiny` against `tiny-qwen` (why one learns by RL in 10 steps and the other not in 20: docs/default.md).

On held-out lookup tasks, from the model's probabilities (no sampling), with the policy's temperature:
  read   turn 1: P(get(asked)) among get(A..D), and how often it is the most probable. Turn 1 must copy the
         asked locker from the question "Code of C?" into the call.
  copy   turn 2 after the right locker was opened (the reply "C has 2"): P(answer(code)) among answer(0..3), and
         how often it is the most probable. Turn 2 must copy the digit from the reply.
  format the probability mass of those four well-formed actions, turn 1 and turn 2, out of all it could write.
After the warm-up all of these are chance (0.25) by construction: its actions are random. The probe then trains
the same LoRA adapter RL trains (r 8, AdamW at RL's lr 1e-3, constant) by a supervised loss on ORACLE episodes
of training tasks (log pi of the oracle's action tokens, 32 episodes a step) and measures again: a model that
cannot learn read and copy from the answers themselves in a few dozen steps will not learn them from a reward.

    python bench/copy_probe.py --models tiny tiny-qwen     # writes bench/results/copy_probe.md
"""

import argparse
import datetime
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
from rollout import PolicyArgs, SamplingArgs, load_policy, rollout, turn_samples  # noqa: E402
from support import tiny  # noqa: E402
from support.tiny import ScriptedPolicy  # noqa: E402
from bench.seeds import cpu_model  # noqa: E402

LOCKERS, CODES, SAMPLING = envs.LookupEnv.lockers, range(envs.LookupEnv.codes), SamplingArgs(max_new_tokens=64)


def scripted(policy, tasks, script):
    """The turn samples of one scripted episode per task (script(episode) -> the turn's text)."""
    actor = ScriptedPolicy(policy.tokenizer, script, policy.chat_kwargs)
    return turn_samples(rollout(actor, envs.LookupEnv, tasks, group_size=1, sampling=SAMPLING))


def action_logprobs(policy, tasks, script):
    """log pi of each turn's whole action (its end-of-turn token included), [tasks, 2]."""
    samples = scripted(policy, tasks, script)
    with torch.no_grad():
        logp, mask = policy.turn_logprobs(samples)
    out = [[] for _ in tasks]
    for s, row in zip(samples, (logp * mask).sum(-1).tolist()):
        out[s.episode].append(row)
    return torch.tensor(out)


def probe(policy, tasks):
    """read, copy and format on these tasks."""
    codes = torch.tensor([t["codes"][t["ask"]] for t in tasks])
    asked = torch.tensor([LOCKERS.index(t["ask"]) for t in tasks])
    rows = torch.arange(len(tasks))
    # turn 1: one scripted episode per candidate locker (turn 2 is not read)
    gets = torch.stack([action_logprobs(policy, tasks, lambda e, x=x: "answer(0)" if e.env.turn else f"get({x})")[:, 0]
                        for x in LOCKERS], 1)  # [tasks, 4]
    # turn 2 after get(asked): one scripted episode per candidate answer
    answers = torch.stack([action_logprobs(policy, tasks, lambda e, k=k: f"answer({k})" if e.env.turn else
                                           f"get({e.task['ask']})")[:, 1] for k in CODES], 1)  # [tasks, 4]
    return {"read": gets.softmax(1)[rows, asked].mean().item(),
            "read_top": (gets.argmax(1) == asked).float().mean().item(),
            "copy": answers.softmax(1)[rows, codes].mean().item(),
            "copy_top": (answers.argmax(1) == codes).float().mean().item(),
            "format_1": gets.exp().sum(1).mean().item(), "format_2": answers.exp().sum(1).mean().item()}


def supervised_step(policy, optimizer, tasks):
    """One step of -mean log pi(oracle action token) over the oracle episodes of `tasks`."""
    samples = scripted(policy, tasks, lambda e: e.env.oracle_action())
    logp, mask = policy.turn_logprobs(samples)
    loss = -(logp * mask).sum() / mask.sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "tiny-qwen"], help="tiny, tiny-qwen or model folders")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 40], help="supervised steps to probe at")
    p.add_argument("--episodes", type=int, default=32, help="oracle episodes per supervised step")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--tasks", type=int, default=200, help="held-out tasks probed")
    p.add_argument("--out", default="bench/results/copy_probe.md")
    args = p.parse_args()
    policy_args = PolicyArgs()
    lines = [f"# `python bench/copy_probe.py {' '.join(sys.argv[1:])}`", "",
             f"- {cpu_model()}, {torch.get_num_threads()} threads, "
             f"{datetime.date.today()}; {args.tasks} held-out lookup tasks, temperature {policy_args.temperature}; "
             f"supervised on oracle episodes of training tasks, {args.episodes} a step, AdamW lr {args.lr} on "
             f"LoRA r {policy_args.lora_r}", "",
             "| model | seed | supervised steps | read: P(get(asked)) | top-1 | copy: P(answer(code)) | top-1 | "
             "well-formed mass, turn 1 | turn 2 | loss | s/step |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    held_out, train = envs.LookupEnv.tasks("test")[: args.tasks], envs.LookupEnv.tasks("train")
    for name in args.models:
        for seed in args.seeds:
            policy = load_policy((tiny.build(name, seed) if name in tiny.EMBEDDED else name), policy_args, seed=seed)
            optimizer = torch.optim.AdamW([q for q in policy.model.parameters() if q.requires_grad], lr=args.lr)
            rng, done, loss, seconds = random.Random(seed), 0, float("nan"), 0.0
            for at in args.steps:
                start = time.perf_counter()
                for _ in range(at - done):
                    loss = supervised_step(policy, optimizer, rng.sample(train, args.episodes))
                seconds, done = (time.perf_counter() - start) / max(1, at - done), at
                r = probe(policy, held_out)
                lines.append(f"| {name} | {seed} | {at} | {r['read']:.3f} | {r['read_top']:.3f} | {r['copy']:.3f} | "
                             f"{r['copy_top']:.3f} | {r['format_1']:.3f} | {r['format_2']:.3f} | {loss:.3f} | "
                             f"{seconds:.2f} |")
                print(lines[-1], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
