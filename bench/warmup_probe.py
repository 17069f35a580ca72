"""How well a tiny warm-up recipe teaches copying: build the tiny model with TINY_WARMUP's steps, lr and episodes
overridden (into its own cache folder), then bench/warmup_copy.relay_copy on 200 held-out relay tasks: the mean
probability of the two offered doors (and of the right one) among open(0)..open(9) at the first fork (chance:
0.2 and 0.1). The default's RL on `lookup` needs the same skill at its second turn: copy the code from a reply.

    python bench/warmup_probe.py --steps 800 --lr 2e-3 --episodes 32 --seed 1     # one line of JSON

Used for issue 42's warm-up choice (bench/results/recipe_search/README.md). Builds at 2 threads as train.py does on
2 cores; ~1.5-2.5 min a build.
"""

import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--episodes", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default="/tmp/seeupo-warmup-probe")
    args = p.parse_args()
    os.environ["SEEUPO_CACHE"] = os.path.join(args.cache, f"{args.steps}-{args.lr}-{args.episodes}")
    torch.set_num_threads(args.threads)
    import envs
    from bench.warmup_copy import relay_copy
    from support import tiny
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tiny.TINY_WARMUP.update(steps=args.steps, lr=args.lr, episodes=args.episodes)  # the folder's name ignores it
    start = time.time()
    path = tiny.build_tiny(args.seed, log=lambda line: None)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    offered, right = relay_copy(tokenizer, model, envs.RelayEnv.tasks("test")[:200])
    print(json.dumps({"steps": args.steps, "lr": args.lr, "episodes": args.episodes, "seed": args.seed,
                      "build_s": round(time.time() - start, 1), "offered": round(offered, 3),
                      "right": round(right, 3)}))


if __name__ == "__main__":
    main()
