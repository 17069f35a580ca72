"""Does the warm-up on a class of yours keep what the default tiny model could do? (why tiny.ENV_WARMUP rehearses)

The default model's warm-up (800 steps on envs.ENVS) teaches it to copy from a message into a call: relay's random
actions open one of the two doors the message offers. A user environment's warm-up then trains the whole model on
random calls of the new tools, whose arguments are drawn from a schema and never copied. This probe measures the
copying that is left, on held-out relay tasks at the first fork, from the model's next-token probabilities after
"open(" (the ten digits renormalised; chance: 0.2 on the offered doors, 0.1 on the right one), for
  default         the default model of the seed (tiny.build_tiny(seed))
  format only     + call_tokens and ENV_WARMUP's steps on the class alone (the warm-up before 2026-12-06)
  with rehearsal  + call_tokens and ENV_WARMUP's steps on the class, interleaved with as many on envs.ENVS
                  (tiny.build_tiny(seed, env): what --model tiny gives a class of yours)

    python bench/warmup_copy.py --seeds 0 1 2          # writes bench/results/warmup_copy.md
"""

import argparse
import datetime
import os
import random
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
from support import tiny  # noqa: E402
from support import user_env  # noqa: E402
from bench.seeds import cpu_model  # noqa: E402

EXAMPLE = dict(spec="examples/lookup_trl.py:LookupTRL", tasks="examples/lookup_trl.jsonl",
               reward="examples/lookup_trl.py:reward")


def relay_copy(tokenizer, model, tasks):
    """Mean probability of the offered doors, and of the right door, among open(0)..open(9) at the first fork."""
    digits = [tokenizer.convert_tokens_to_ids(str(d)) for d in range(10)]
    offered = right = 0.0
    for task in tasks:
        a, b, which = task["forks"][0]
        prompt = tokenizer.apply_chat_template(envs.RelayEnv().reset(task), tokenize=False, add_generation_prompt=True)
        with torch.no_grad():
            logits = model(tokenizer(prompt + "open(", return_tensors="pt")["input_ids"]).logits[0, -1]
        p = logits[digits].softmax(-1)
        offered, right = offered + (p[a] + p[b]).item(), right + p[(a, b)[which]].item()
    return offered / len(tasks), right / len(tasks)


def format_only(seed, loaded):
    """The class's warm-up without rehearsal: build_tiny(seed, env)'s steps on the class alone."""
    base = tiny.build_tiny(seed)
    tokenizer, model = AutoTokenizer.from_pretrained(base), AutoModelForCausalLM.from_pretrained(base)
    tiny.add_tokens(model, tokenizer, tiny.call_tokens(loaded.factory().tools))
    tiny.env_warm_up(model, tokenizer, loaded, random.Random(seed), rehearse=False)
    return tokenizer, model.eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tasks", type=int, default=200, help="held-out relay tasks probed")
    p.add_argument("--out", default="bench/results/warmup_copy.md")
    args = p.parse_args()
    loaded = user_env.load_env(EXAMPLE["spec"], tasks=EXAMPLE["tasks"], reward=EXAMPLE["reward"])
    tasks = envs.RelayEnv.tasks("test")[: args.tasks]
    lines = [f"# `python bench/warmup_copy.py {' '.join(sys.argv[1:])}`", "",
             f"- {cpu_model()}, {torch.get_num_threads()} threads, {datetime.date.today()}; the class: "
             f"{EXAMPLE['spec']}; {args.tasks} held-out relay tasks, first fork; P among open(0)..open(9) "
             "(chance: offered 0.2, right 0.1)", "",
             "| seed | default: offered | right | format only: offered | right | with rehearsal: offered | right |",
             "|--:|--:|--:|--:|--:|--:|--:|"]
    for seed in args.seeds:
        folders = [tiny.build_tiny(seed), tiny.build_tiny(seed, loaded)]
        default, rehearsed = [(AutoTokenizer.from_pretrained(f), AutoModelForCausalLM.from_pretrained(f).eval())
                              for f in folders]
        row = [relay_copy(*m, tasks) for m in (default, format_only(seed, loaded), rehearsed)]
        lines.append(f"| {seed} | " + " | ".join(f"{o:.3f} | {r:.3f}" for o, r in row) + " |")
        print(lines[-1], flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
