"""Bring your own environment: `--env FILE.py:Class` (or `package.module:Class`), checked before any model is loaded.

    loaded = load_env("examples/lookup_trl.py:LookupTRL", tasks="examples/lookup_trl.jsonl",
                      reward="examples/lookup_trl.py:reward")
    loaded.factory()                         a fresh environment for one episode (what rollout.rollout() takes)
    loaded.train_tasks, loaded.test_tasks    the tasks: plain JSON dicts, each with a unique "id"

Two kinds of class, told apart by their shape (docs/environments.md: examples and the rules in full):
- this project's interface (the top of envs.py; a `step`): used as is, after checks of what the training loop
  calls -- each missing piece one line -- and one empty turn on a scratch instance. `random_action` is needed by
  the tiny model's warm-up only (need_random_action=True), `oracle_action` never.
- TRL's `environment_factory` kind (a `reset` and public methods, no `step`), with a JSONL tasks file and TRL's
  reward function or a `get_reward` method: trl_env.py checks it and plays it through this project's interface.

How it connects: train.Args and eval.EvalArgs inherit EnvArgs (the flags that name the environment), and both
call resolve_env(), which gives the same LoadedEnv for a toy environment (envs.ENVS), for BFCL (support/bfcl.py)
and for a class of yours (load_env); they hand loaded.factory to rollout.rollout(). With --model tiny,
tiny.build("tiny", seed, loaded) warms the tiny model up on your class's random_action() once, cached under
loaded.digest. The helpers this file shares with trl_env.py are in loaded_env.py.
"""

import functools
import inspect
from dataclasses import dataclass
from typing import Literal

import envs
from seeupo import knob
from support import bfcl
from support.loaded_env import LoadedEnv, digest, fail, is_message, load_object, one_line
from support.trl_env import load_trl


@dataclass
class EnvArgs:
    """The flags that name the environment (train.Args and eval.EvalArgs inherit them; resolve_env reads them)."""
    env: str = knob("lookup", f"environment: {', '.join(envs.ENVS)}, bfcl (docs/bfcl.md, needs bfcl-eval), or a "
                              "class of yours, FILE.py:Class or package.module:Class (docs/environments.md)")
    tasks: str = knob("", "a TRL-style --env class's tasks, FILE.jsonl: a row per task, a `prompt` and reset()'s "
                          "columns, `split` train or test")
    test_tasks: str = knob("", "the TRL-style class's held-out rows in their own FILE.jsonl")
    reward: str = knob("", "the TRL-style class's reward, FILE.py:function (TRL's reward_func), unless it has "
                           "get_reward()")
    max_turns: int = knob(0, "policy turns per episode (0: the environment's own limit)")
    max_tool_output: int = knob(2000, "BFCL and TRL-style classes: tool outputs longer than this many characters are "
                                      "truncated, marked")
    success_at: float = knob(0.0, "a TRL-style class: an episode whose reward reaches this is a success, in "
                                  "training's evaluations and eval.py (0: the class's success_at, else 1.0)")
    bfcl_category: Literal[bfcl.CATEGORIES] = knob("multi_turn_base", "BFCL v4 category to train on")
    bfcl_dense: bool = knob(False, "BFCL: reward = fraction of leading user turns that pass (eval stays binary)")


def resolve_env(args, need_random_action=False):
    """What --env names, as one LoadedEnv for every kind: a toy environment (envs.ENVS), BFCL (its category and
    reward from --bfcl_category and --bfcl_dense) or a class of yours (load_env). args: EnvArgs (or train.Args,
    eval.EvalArgs). need_random_action: --model tiny (its warm-up plays random actions). Every problem stops here in
    one line, before any model is loaded."""
    if args.tasks.strip().isdigit():
        fail(f"--tasks names a tasks file, FILE.jsonl (of a TRL-style --env class); the number of held-out tasks "
             f"is --eval_tasks {args.tasks.strip()}")
    kwargs = {"max_turns": args.max_turns} if args.max_turns else {}
    if ":" in args.env:
        return load_env(args.env, args.tasks or None, args.test_tasks or None, args.reward or None, args.max_turns,
                        need_random_action, max_tool_output=args.max_tool_output, success_at=args.success_at)
    names = (*envs.ENVS, "bfcl")  # read now: a class added to envs.ENVS after import counts (EXERCISES.md, 4)
    if args.env not in names:
        fail(f"unknown --env {args.env!r}: choose one of {', '.join(names)}, or give a class of yours as FILE.py:Class "
             f"or package.module:Class (docs/environments.md)")
    for flag in ("tasks", "test_tasks", "reward", "success_at"):
        if getattr(args, flag):
            fail(f"--{flag} is for a TRL-style class (--env FILE.py:Class); --env {args.env} has its own tasks and "
                 f"reward")
    if args.env == "bfcl":
        factory = functools.partial(bfcl.BfclEnv, category=args.bfcl_category, dense_reward=args.bfcl_dense,
                                    max_tool_output=args.max_tool_output, **kwargs)
    else:
        factory = functools.partial(envs.make_env, args.env, **kwargs)
    env = factory()
    return LoadedEnv(env.name, factory, env.tasks("train"), env.tasks("test"), "")  # no digest: the default tiny


def load_env(spec, tasks=None, test_tasks=None, reward=None, max_turns=0, need_random_action=False, **trl_options):
    """The class `spec` names, checked, as a LoadedEnv. A class with a `step` is this project's interface (tasks,
    test_tasks and reward are not for it); one with a `reset` and no `step`, or no tasks() but a tasks file, is
    TRL's kind (tasks: a JSONL file, test_tasks: another for the test rows, reward: FILE.py:function, or its
    get_reward method). max_turns: 0 = the class's own. need_random_action: the tiny model's warm-up will draw
    random actions (a TRL-style class always has them: TrlEnv.random_action). trl_options: trl_env.load_trl's
    success_at, tool_seconds, max_tool_output. Every problem stops here, in one line, before any model is loaded."""
    cls = load_object(spec, "--env")
    if not inspect.isclass(cls):
        fail(f"--env {spec}: {type(cls).__name__} {spec.rpartition(':')[2]} is not a class")
    # a `step` is this project's interface, unless tasks come with a class that has no tasks(): TRL's kind, where a
    # game's `step(action)` may well be a tool
    has_tasks = callable(getattr(cls, "tasks", None))
    if callable(getattr(cls, "step", None)) and not has_tasks and not tasks and callable(getattr(cls, "reset", None)):
        fail(f"--env {spec}: {cls.__name__} has reset() and step() but no tasks(split): a TRL environment_factory "
             f"class (its step a tool) needs its tasks, --tasks FILE.jsonl (and --reward); this project's interface "
             f"needs tasks(split) (envs.py's top)")
    if callable(getattr(cls, "step", None)) and not (tasks and not has_tasks):
        if trl_options.get("success_at"):
            fail(f"--success_at is for TRL-style classes; {cls.__name__} reports its own info['success']")
        for flag, value in (("--tasks", tasks), ("--test_tasks", test_tasks), ("--reward", reward)):
            if value:
                fail(f"{flag} is for TRL-style classes; {cls.__name__} has step(), this project's interface: its "
                     f"tasks come from {cls.__name__}.tasks(split) and its reward from step()")
        return _project_env(cls, max_turns, need_random_action)
    if callable(getattr(cls, "reset", None)):
        return load_trl(cls, tasks, test_tasks, reward, max_turns, **trl_options)
    fail(f"--env {spec}: {cls.__name__} has neither step() (this project's interface, envs.py's top) nor reset() "
         f"(a TRL environment_factory class)")


# ----------------------------------------------------------------------------- this project's interface, as is
def _project_env(cls, max_turns, need_random_action):
    """Check a class with this project's interface: what rollout(), train.py and eval.py call, each missing piece
    one line; one empty turn on a scratch instance checks what reset() and step() return."""
    label = cls.__name__
    missing = [m for m in ("tasks", "reset", "step") if not callable(getattr(cls, m, None))]
    if missing:
        fail(f"{label} lacks {', '.join(missing)}: this project's interface needs tasks(split), reset(task) and "
             f"step(text) (the top of envs.py)")
    if need_random_action and not callable(getattr(cls, "random_action", None)):
        fail(f"{label} has no random_action(rng): --model tiny's warm-up plays random well-formed actions to learn "
             f"the format; add one, or train a real model (--model Qwen/Qwen3-0.6B)")
    kwargs = {"max_turns": max_turns} if max_turns else {}
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        fail(f"{label}({', '.join(f'{k}={v}' for k, v in kwargs.items())}): {e}; the training loop makes one per "
             f"episode with {'only max_turns (--max_turns)' if kwargs else 'no argument'}")
    factory = functools.partial(cls, **kwargs)
    try:
        env = factory()
    except Exception as e:
        fail(f"{label}() raised {one_line(e)}")
    if not isinstance(getattr(env, "max_turns", None), int) or env.max_turns < 1:
        fail(f"{label}.max_turns must be an int >= 1 (the most policy turns of an episode), not "
             f"{getattr(env, 'max_turns', 'missing')!r}")
    splits = {}
    for split in ("train", "test"):
        try:
            splits[split] = list(env.tasks(split))
        except Exception as e:
            fail(f"{label}.tasks({split!r}) raised {one_line(e)}; tasks(split) returns a list of task dicts")
        if not splits[split]:
            fail(f"{label}.tasks({split!r}) is empty: training needs train tasks, evaluation held-out test tasks")
        ids = [t.get("id") if isinstance(t, dict) else None for t in splits[split]]
        if None in ids:
            fail(f"{label}.tasks({split!r}): each task must be a dict with an \"id\"")
        if len(set(map(str, ids))) < len(ids):
            fail(f"{label}.tasks({split!r}): task ids must be unique")
    for method, args in (("reset", (splits["train"][0],)), ("step", ("",))):
        try:
            inspect.signature(getattr(env, method)).bind(*args)
        except TypeError:
            fail(f"{label}.{method}{inspect.signature(getattr(env, method))}: it must take one argument, "
                 f"{'the task' if method == 'reset' else 'the policy turn as text'}")
    scratch = factory()
    try:
        messages = scratch.reset(splits["train"][0])
    except Exception as e:
        fail(f"{label}.reset(task) raised {one_line(e)} on the first train task")
    if not (isinstance(messages, list) and messages and all(is_message(m) for m in messages)):
        fail(f"{label}.reset(task) must return chat messages, a list of {{'role': ..., 'content': '...'}}, "
             f"not {str(messages)[:60]!r}")
    if not hasattr(scratch, "tools") or not (scratch.tools is None or isinstance(scratch.tools, list)):
        fail(f"{label}.tools must be None or a list of JSON tool schemas (the chat template's tools=), not "
             f"{str(getattr(scratch, 'tools', 'missing'))[:40]!r}")
    try:
        out = scratch.step("")
    except Exception as e:
        fail(f"{label}.step('') raised {one_line(e)}: a turn it cannot parse gets a reply, never an exception")
    if not (isinstance(out, tuple) and len(out) == 4 and isinstance(out[0], list) and all(map(is_message, out[0]))
            and isinstance(out[1], bool) and isinstance(out[2], (int, float)) and isinstance(out[3], dict)):
        fail(f"{label}.step(text) must return (reply messages, done, reward, info), not {str(out)[:80]!r}")
    return LoadedEnv(getattr(env, "name", label), factory, splits["train"], splits["test"],
                     digest([cls], kwargs, splits))
