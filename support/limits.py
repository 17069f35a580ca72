"""Every limit a run or an evaluation can meet, checked before any model is built or loaded, all at once.

    check_limits(args, loaded)    train.py and eval.py call it right after resolving --env

From the tokenizer alone (tokenizer_for: an embedded model's from its cache or its recipe, in a second; any other
model's from its folder or the Hub), on the environment's own tasks and random well-formed actions:
  - the longest first prompt (of up to PROMPTS tasks) and one turn must fit in --max_context;
  - the longest of ACTIONS random actions, with its end-of-turn token, must fit in --max_new_tokens;
  - a few random episodes (EPISODES) played to their end, each turn's prefix and --max_new_tokens, must fit in
    --max_context (the rollout starts a turn only where a whole one fits).
Every problem found goes into ONE message, each with the flag that fixes it and a value with room (ROOM): a limit
met after a 20-minute warm-up, or one at a time, or fixed at exactly the minimum, wastes a user's afternoon.
What cannot be known before training (how many turns a learning policy takes) is counted per step instead
(train.py's cut_* metrics).
"""

import math
import random
import tempfile

from transformers import AutoTokenizer

from rollout import check_model, render_prompt, render_reply
from support import qwen_offline, tiny

PROMPTS, ACTIONS, EPISODES = 256, 32, 8
ROOM = 1.5  # suggested limits: this much above what was measured, rounded up


def tokenizer_for(model, seed, env):
    """The tokenizer --model will have, chat template included, without building or loading a model."""
    if model == "tiny":
        own, default = tiny.tiny_path(seed, env.digest), tiny.tiny_path(seed)
        if tiny.is_built(own):
            return AutoTokenizer.from_pretrained(own)
        tokenizer = AutoTokenizer.from_pretrained(default) if tiny.is_built(default) else tiny.tiny_tokenizer(seed)
        if env.digest:  # a class of yours: the tiny model learns its call tokens too
            tokenizer.add_tokens(tiny.call_tokens(env.factory().tools))
        return tokenizer
    if model == "tiny-qwen":
        folder = tiny.tiny_qwen_path(seed)
        if not tiny.is_built(folder):
            folder = tempfile.mkdtemp()
            qwen_offline.write_tokenizer(folder)  # what the build writes first (3 s)
        return AutoTokenizer.from_pretrained(folder)
    check_model(model)
    return AutoTokenizer.from_pretrained(model)


def room(n, multiple=8):
    return math.ceil(n * ROOM / multiple) * multiple


def check_limits(args, loaded):
    """Stop, in one message listing every problem and the flags that fix them, if the environment's prompts,
    actions or episodes cannot fit in --max_context and --max_new_tokens. args: train.Args or eval.EvalArgs."""
    tokenizer = tokenizer_for(args.model, args.seed, loaded)
    chat = {"enable_thinking": args.thinking}
    tasks = loaded.train_tasks + loaded.test_tasks
    tasks = tasks[:: max(1, len(tasks) // PROMPTS)]
    prompt = max(len(render_prompt(tokenizer, env.reset(task), env.tools, chat))
                 for task in tasks for env in [loaded.factory()])
    problems = []
    if prompt + args.max_new_tokens > args.max_context:
        problems.append(f"the longest first prompt has {prompt} tokens and a turn up to {args.max_new_tokens} "
                        f"more: raise --max_context to {room(prompt + args.max_new_tokens, 256)}")
    if callable(getattr(loaded.factory(), "random_action", None)):
        action, episode = _random_play(tokenizer, loaded, tasks, chat, random.Random(0))
        if action > args.max_new_tokens:
            problems.append(f"a well-formed action takes up to {action} tokens with its end of turn (the longest "
                            f"of {ACTIONS} random ones), more than --max_new_tokens {args.max_new_tokens}: raise "
                            f"--max_new_tokens to {room(action)}")
        need = episode + args.max_new_tokens  # the rollout starts a turn only where one more fits
        if need > args.max_context and prompt + args.max_new_tokens <= args.max_context:
            problems.append(f"random episodes played to their end need up to {need} tokens of context (their "
                            f"last turn's prefix and --max_new_tokens), more than --max_context "
                            f"{args.max_context}: they would end cut, reward 0; raise --max_context to "
                            f"{room(need, 256)}")
    if len(problems) == 1:
        raise SystemExit(f"error: {loaded.name} does not fit the limits: {problems[0]}")
    if problems:  # every one, so that one run of fixes is enough
        raise SystemExit(f"error: {loaded.name} does not fit the limits (checked before any model is loaded):\n  "
                         + "\n  ".join(f"- {p}" for p in problems))


def _random_play(tokenizer, loaded, tasks, chat, rng):
    """(the longest random action's tokens with the end of turn, the longest prefix a random episode's last
    turn starts from)."""
    encode = tokenizer.encode
    env = loaded.factory()
    env.reset(tasks[0])
    action = max(len(encode(env.random_action(rng), add_special_tokens=False)) + 1 for _ in range(ACTIONS))
    episode = 0
    for task in tasks[:EPISODES]:
        env = loaded.factory()
        length = len(render_prompt(tokenizer, env.reset(task), env.tools, chat))
        for _ in range(env.max_turns):
            episode = max(episode, length)
            text = env.random_action(rng)
            length += len(encode(text, add_special_tokens=False)) + 1
            reply, done, _, _ = env.step(text)
            if done:
                break
            length += len(render_reply(tokenizer, reply, chat))
    return action, episode
