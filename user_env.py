"""Bring your own environment: `--env FILE.py:Class` (or `package.module:Class`), checked before any model is loaded.

    loaded = load_env("examples/lookup_trl.py:LookupTRL", tasks="examples/lookup_trl.jsonl",
                      reward="examples/lookup_trl.py:reward")
    loaded.factory()                         a fresh environment for one episode (what rollout.rollout() takes)
    loaded.train_tasks, loaded.test_tasks    the tasks: plain JSON dicts, each with a unique "id"

Two kinds of class, told apart by their shape (docs/environments.md: examples, the rules in full, TRL's ways):
- this project's interface (the top of envs.py; a `step`): used as is, after checks of what the training loop
  calls and one empty turn on a scratch instance. `random_action` is needed by the tiny model's warm-up only.
- TRL's `environment_factory` kind (a `reset` and public methods, no `step`), with a JSONL tasks file (`prompt`
  + the columns `reset` takes, a `split` column or a separate test file) and TRL's reward function or a
  `get_reward` method. TrlEnv plays it through this project's interface: one instance per episode, `reset(**row)`
  once; the class's public methods are the tools (schemas by transformers' get_json_schema); model text ->
  `<tool_call>` JSON blocks through bfcl_calls.parse_calls (never eval); each call runs the class's own function
  on this episode's instance, under a time limit; the result, or the error as one line, is a `tool` message; the
  episode ends at an answer without a call or at max_turns, and the reward is computed then, TRL's way.

Time limits: bfcl_calls.guarded raises inside the call from a SIGALRM timer, which really stops Python code, in
the main thread (where train.py and eval.py step environments; elsewhere calls run unguarded). A thread with a
timeout cannot be killed: the call would run on and change the episode's instance; a process per episode would
cost a start-up per episode and move the instance, which the reward reads, out of this process. The class is
trusted code; the model's text is not.

How it connects (issue 29's phase 2 wires it in): train.py and eval.py call load_env() for an --env with a ':'
(envs.make_env for a built-in name) and hand loaded.factory to rollout.rollout(); tiny.py's warm-up calls
random_action() on its environments.
"""

import copy
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import time
import types
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from bfcl_calls import Stopped, guarded, parse_calls

DEFAULT_MAX_TURNS = 8    # policy turns of a TRL-style episode, unless the class or --max_turns says otherwise
TOOL_SECONDS = 5.0       # wall clock for all the calls of one message (bfcl_calls.guarded stops them)
MAX_TOOL_OUTPUT = 2000   # characters of one tool message (longer: cut, marked)
SUCCESS_AT = 1.0         # an episode whose reward reaches this is a success
FINAL_ANSWER = 0.1       # random_action: how often it answers without a call (the episode ends)
RESERVED = ("reset", "get_reward")  # TRL's reserved method names: never tools
CALL_FORMAT = 'call a tool as <tool_call>\n{"name": "<tool>", "arguments": {...}}\n</tool_call>'


def fail(message):
    raise SystemExit(f"error: {message}")


def _one_line(error, limit=200):
    """An exception as one short line: its type, and the first line of its text."""
    try:
        text = str(error).strip().splitlines()
    except Exception:  # a broken __str__
        text = []
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


class LoadedEnv(NamedTuple):
    """What the training loop needs from --env FILE.py:Class."""
    name: str           # the environment's name (logs, transcripts)
    factory: Callable   # factory() -> a fresh environment for one episode
    train_tasks: list   # plain JSON dicts, each with a unique "id"
    test_tasks: list


# ----------------------------------------------------------------------------- FILE.py:Name, package.module:Name
@functools.lru_cache(maxsize=None)
def _module_from_file(path):
    """A Python file as a module, loaded once per file (a class and a reward from one file share it), under a
    name of its own (a user's envs.py must not replace this project's); its folder goes on sys.path for its
    own imports."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"user_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up here
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # no half-run module left behind
        raise
    return module


def load_object(spec, flag):
    """The object a `FILE.py:Name` or `package.module:Name` names; else one line naming what is wrong."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name.isidentifier():
        fail(f"{flag} {spec!r}: give FILE.py:Name or package.module:Name")
    try:
        if where.endswith(".py") or "/" in where or os.sep in where:
            if not os.path.isfile(where):
                fail(f"{flag} {spec}: no file {where}")
            module = _module_from_file(os.path.realpath(where))
        else:
            module = importlib.import_module(where)
    except SystemExit:
        raise
    except Exception as e:  # ModuleNotFoundError, a SyntaxError or any error while the user's file runs
        fail(f"{flag} {spec}: importing {where} failed ({_one_line(e)})")
    if not hasattr(module, name):
        fail(f"{flag} {spec}: {where} defines no {name}")
    return getattr(module, name)


def load_env(spec, tasks=None, test_tasks=None, reward=None, max_turns=0, need_random_action=False,
             success_at=SUCCESS_AT, tool_seconds=TOOL_SECONDS, max_tool_output=MAX_TOOL_OUTPUT):
    """The class `spec` names, checked, as a LoadedEnv. A class with a `step` is this project's interface (tasks,
    test_tasks and reward are not for it); one with a `reset` and no `step` is TRL's kind (tasks: a JSONL file,
    test_tasks: another for the test rows, reward: FILE.py:function, or its get_reward method). max_turns: 0 = the
    class's own. need_random_action: the tiny model's warm-up will draw random actions (a TRL-style class always
    has them: TrlEnv.random_action). Every problem stops here, in one line, before any model is loaded."""
    cls = load_object(spec, "--env")
    if not inspect.isclass(cls):
        fail(f"--env {spec}: {type(cls).__name__} {spec.rpartition(':')[2]} is not a class")
    if callable(getattr(cls, "step", None)):
        for flag, value in (("--tasks", tasks), ("--test_tasks", test_tasks), ("--reward", reward)):
            if value:
                fail(f"{flag} is for TRL-style classes; {cls.__name__} has step(), this project's interface: its "
                     f"tasks come from {cls.__name__}.tasks(split) and its reward from step()")
        return _project_env(cls, max_turns, need_random_action)
    if callable(getattr(cls, "reset", None)):
        return _trl_env(cls, tasks, test_tasks, reward, max_turns, success_at, tool_seconds, max_tool_output)
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
        fail(f"{label}() raised {_one_line(e)}")
    if not isinstance(getattr(env, "max_turns", None), int) or env.max_turns < 1:
        fail(f"{label}.max_turns must be an int >= 1 (the most policy turns of an episode), not "
             f"{getattr(env, 'max_turns', 'missing')!r}")
    splits = {}
    for split in ("train", "test"):
        try:
            splits[split] = list(env.tasks(split))
        except Exception as e:
            fail(f"{label}.tasks({split!r}) raised {_one_line(e)}; tasks(split) returns a list of task dicts")
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
        fail(f"{label}.reset(task) raised {_one_line(e)} on the first train task")
    if not (isinstance(messages, list) and messages and all(_is_message(m) for m in messages)):
        fail(f"{label}.reset(task) must return chat messages, a list of {{'role': ..., 'content': '...'}}, "
             f"not {str(messages)[:60]!r}")
    if getattr(scratch, "tools", None) is not None and not isinstance(scratch.tools, list):
        fail(f"{label}.tools must be None or a list of JSON tool schemas (the chat template's tools=)")
    try:
        out = scratch.step("")
    except Exception as e:
        fail(f"{label}.step('') raised {_one_line(e)}: a turn it cannot parse gets a reply, never an exception")
    if not (isinstance(out, tuple) and len(out) == 4 and isinstance(out[0], list) and all(map(_is_message, out[0]))
            and isinstance(out[1], bool) and isinstance(out[2], (int, float)) and isinstance(out[3], dict)):
        fail(f"{label}.step(text) must return (reply messages, done, reward, info), not {str(out)[:80]!r}")
    return LoadedEnv(getattr(env, "name", label), factory, splits["train"], splits["test"])


def _is_message(m):
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


# ----------------------------------------------------------------------------- a TRL-style class: checks
def _read_rows(path, flag, default_split):
    """A tasks file: one JSON object per line with a `prompt` (chat messages) and an optional `split`."""
    if not os.path.isfile(path):
        fail(f"{flag}: no file {path}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{flag} {path}, line {number}"
            try:
                row = json.loads(line)
            except ValueError as e:
                fail(f"{where}: not JSON ({_one_line(e)})")
            if not isinstance(row, dict):
                fail(f"{where}: a row is a JSON object")
            if "prompt" not in row:
                fail(f"{where}: no `prompt` (a list of chat messages, e.g. [{{\"role\": \"user\", \"content\": ...}}])")
            if not (isinstance(row["prompt"], list) and row["prompt"] and all(map(_is_message, row["prompt"]))):
                fail(f"{where}: `prompt` must be a list of chat messages with string content, "
                     f"e.g. [{{\"role\": \"user\", \"content\": \"...\"}}]")
            split = row.get("split", default_split)
            if split not in ("train", "test") or (default_split == "test" and split != "test"):
                fail(f"{where}: unknown split {split!r}; `split` is \"train\" or \"test\""
                     + (" (this is the test file)" if default_split == "test" else ""))
            for name in ("prompts", "completions", "environments", "completion_ids", "trainer_state"):
                if name in row:
                    fail(f"{where}: a column cannot be named {name!r}: TRL passes its own to the reward")
            rows.append((where, split, row))
    if not rows:
        fail(f"{flag} {path}: no rows")
    return rows


def _tool_functions(cls):
    """The offered tools: {name: the class's function}, as TRL picks them (public methods, not reset and
    get_reward), but plain functions only: a static or class method would share state between episodes."""
    return {name: value for name, value in inspect.getmembers_static(cls)
            if not name.startswith("_") and name not in RESERVED and inspect.isfunction(value)}


def _bind_check(fn, what, hint, **kwargs):
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as e:
        fail(f"{what}: {e}; {hint}")


def _trl_env(cls, tasks, test_tasks, reward, max_turns, success_at, tool_seconds, max_tool_output):
    label = cls.__name__
    if not tasks:
        fail(f"--env {label} is a TRL-style class (reset, no step): give its tasks with --tasks FILE.jsonl (one row "
             f"per task: a `prompt` list of chat messages and the columns reset() takes)")
    rows = _read_rows(tasks, "--tasks", "train")
    rows += _read_rows(test_tasks, "--test_tasks", "test") if test_tasks else []
    train = [(w, r) for w, s, r in rows if s == "train"]
    test = [(w, r) for w, s, r in rows if s == "test"]
    if not train:
        fail(f"--tasks {tasks}: no train rows (rows without `split`, or split \"train\")")
    if not test:
        fail(f"--tasks {tasks}: no test rows: add rows with \"split\": \"test\", or give --test_tasks FILE.jsonl "
             f"(held-out evaluation needs them)")
    if inspect.iscoroutinefunction(cls.reset):
        fail(f"{label}.reset is async: this project calls environments synchronously; make it a plain method")
    for where, row in train + test:
        _bind_check(cls.reset, f"{where}: {label}.reset(**row)", "reset receives every column of a row but split",
                    self=None, **_reset_columns(row))
    functions = _tool_functions(cls)
    if not functions:
        fail(f"{label} offers no tools: its public methods (type hints, a Google-style docstring with Args:) are the "
             f"model's tools; reset and get_reward are reserved")
    try:
        probe = cls()
    except Exception as e:
        fail(f"{label}() raised {_one_line(e)}: a TRL environment class is made with no argument, one per episode")
    from transformers.utils import get_json_schema  # here: transformers takes seconds to import
    schemas = []
    for name, function in functions.items():
        if inspect.iscoroutinefunction(function):
            fail(f"{label}.{name} is async: this project runs tools synchronously; make it a plain method")
        try:
            schemas.append(get_json_schema(types.MethodType(function, probe)))
        except Exception as e:  # TypeHintParsingException, DocstringParsingException
            fail(f"{label}.{name}: {e} (a tool needs type hints and a Google-style docstring: a summary line, then "
                 f"Args: with one line per argument; `(choices: [...])` at its end makes an enum)")
    try:
        observation = probe.reset(**_reset_columns(copy.deepcopy(train[0][1])))
    except Exception as e:
        fail(f"{label}.reset(**row) raised {_one_line(e)} on {train[0][0]}")
    if observation is not None and not isinstance(observation, str):
        fail(f"{label}.reset must return None or text (appended to the last prompt message), not "
             f"{type(observation).__name__}")
    reward_fn = load_object(reward, "--reward") if reward else None
    get_reward = getattr(cls, "get_reward", None)
    if reward_fn is None and not callable(get_reward):
        fail(f"no reward for {label}: give --reward FILE.py:function (TRL's reward_func(completions, environments, "
             f"**kwargs)) or define {label}.get_reward(self) -> float")
    if reward_fn is not None:
        if not callable(reward_fn) or inspect.iscoroutinefunction(reward_fn):
            fail(f"--reward {reward}: not a plain function (TRL's reward_func(completions, environments, **kwargs))")
        for where, row in train + test:
            _bind_check(reward_fn, f"--reward {reward} on {where}", "it is called as reward_func(prompts, completions, "
                        "environments, trainer_state, log_extra, log_metric, **the row's other columns): add **kwargs",
                        **_reward_kwargs([], [], [], row))
    if callable(get_reward):
        if inspect.iscoroutinefunction(get_reward):
            fail(f"{label}.get_reward is async: make it a plain method")
        _bind_check(get_reward, f"{label}.get_reward", "it takes no argument but self", self=None)
    own = getattr(cls, "max_turns", None)
    setup = TrlSetup(cls=cls, name=label, functions=functions, schemas=schemas, reward=reward_fn,
                     get_reward=callable(get_reward), max_turns=max_turns or (own if isinstance(own, int) and own >= 1
                                                                              else DEFAULT_MAX_TURNS),
                     success_at=success_at, tool_seconds=tool_seconds, max_tool_output=max_tool_output,
                     train=[{"id": f"{label}-train-{i}", "row": r} for i, (_, r) in enumerate(train)],
                     test=[{"id": f"{label}-test-{i}", "row": r} for i, (_, r) in enumerate(test)])
    return LoadedEnv(label, functools.partial(TrlEnv, setup), setup.train, setup.test)


def _reset_columns(row):
    """What reset() gets: every column, `prompt` included, as TRL passes them; `split` is this project's."""
    return {k: v for k, v in row.items() if k != "split"}


def _ignore(*args, **kwargs):
    """TRL's log_extra and log_metric (the completions table, extra metrics): nothing here."""


def _reward_kwargs(prompts, completions, environments, row):
    """The reward function's keyword arguments, as TRL's GRPOTrainer passes them (one completion here)."""
    columns = {k: [copy.deepcopy(v)] for k, v in row.items() if k not in ("prompt", "split")}
    return dict(prompts=prompts, completions=completions, environments=environments, trainer_state=None,
                log_extra=_ignore, log_metric=_ignore, **columns)


# ----------------------------------------------------------------------------- a TRL-style class: the episodes
@dataclass
class TrlSetup:
    """What load_env learned about a TRL-style class, once; every TrlEnv reads it, none changes it."""
    cls: type
    name: str
    functions: dict      # tool name -> the class's function, called on this episode's instance only
    schemas: list        # their JSON schemas, the chat template's tools=
    reward: Callable     # TRL's reward_func, or None
    get_reward: bool     # the class's get_reward() is a reward source too
    max_turns: int
    success_at: float
    tool_seconds: float
    max_tool_output: int
    train: list = field(repr=False)  # tasks: {"id": ..., "row": the tasks file's row}
    test: list = field(repr=False)


class TrlEnv:
    """One episode of a TRL-style class through this project's interface (module docstring): reset(task) makes
    the class's instance for this episode, step(text) runs the calls in the text on it."""

    def __init__(self, setup):
        self.setup, self.name, self.max_turns = setup, setup.name, setup.max_turns
        self.tools = copy.deepcopy(setup.schemas)

    def tasks(self, split, n=None, seed=0):
        """The tasks file's rows of this split, in file order (the seed changes nothing)."""
        return {"train": self.setup.train, "test": self.setup.test}[split][:n]

    def reset(self, task):
        row = copy.deepcopy(task["row"])  # the instance may keep and change what it gets: never the task's own
        self.instance = self.setup.cls()
        observation = self.instance.reset(**_reset_columns(row))
        messages = row["prompt"]
        if observation is not None:  # as TRL: appended to the last prompt message
            if not isinstance(observation, str):
                raise TypeError(f"{self.name}.reset returned {type(observation).__name__}, not None or text")
            messages[-1] = {**messages[-1], "content": messages[-1]["content"] + observation}
        self.row, self.prompt, self.completion, self.turn = row, copy.deepcopy(messages), [], 0
        self.words = re.findall(r"[A-Za-z0-9_]+", " ".join(m["content"] for m in messages)) or ["done"]
        return messages

    def step(self, text):
        self.turn += 1
        calls = parse_calls(text, python_list=False)
        if not calls:
            self.completion.append({"role": "assistant", "content": text})
            return self._end("answered without a tool call", [], {})
        deadline, replies, asked, malformed = time.monotonic() + self.setup.tool_seconds, [], [], False
        for call in calls:
            if isinstance(call, str):  # the parser's reason: not valid JSON, not a literal, over a limit
                content, returned = _error(f"{call}; {CALL_FORMAT}"), False
                replies.append({"role": "tool", "content": content})
            else:
                name, args, kwargs = call
                asked.append({"type": "function", "function": {"name": name, "arguments": kwargs}})
                content, returned = self._run(name, args, kwargs, deadline - time.monotonic())
                replies.append({"role": "tool", "name": name, "content": content})
            malformed |= not returned
        self.completion += [{"role": "assistant", "content": text.split("<tool_call>")[0].strip(), "tool_calls": asked},
                            *replies]
        info = {"malformed": True} if malformed else {}
        if self.turn >= self.max_turns:
            return self._end(f"max_turns {self.max_turns} reached", replies, info)
        return replies, False, 0.0, info

    def _run(self, name, args, kwargs, seconds):
        """(the tool message's text, whether the call returned): the class's own function on this episode's
        instance, stopped at the time left; only offered tools."""
        function = self.setup.functions.get(name)
        if function is None:
            return _error(f"Tool {name} not found."), False  # TRL's words
        if seconds <= 0:
            return _error(f"not run: this message's calls used up their {self.setup.tool_seconds:g} s"), False
        instance = self.instance
        try:  # str() inside the guard too: of a huge int it raises, of a deep structure it can take long
            result = guarded(lambda: _as_text(function(instance, *args, **kwargs)), seconds)
        except Stopped as e:
            return _error(f"the call was stopped: {e}"), False
        except RecursionError:
            return _error("RecursionError: maximum recursion depth exceeded"), False
        except Exception as e:
            return _error(_one_line(e)), False
        n = self.setup.max_tool_output
        if n and len(result) > n:
            result = f"{result[:n]}... [truncated: {len(result) - n} more characters]"
        return _valid_utf8(result), True

    def _end(self, why, replies, info):
        reward = self._reward()
        return (replies + [{"role": "user", "content": f"{why}; reward {reward:g}"}], True, reward,
                {**info, "success": reward >= self.setup.success_at})

    def _reward(self):
        """TRL's way: the reward function on this one completion, plus get_reward() if the class has it."""
        total = 0.0
        if self.setup.reward is not None:
            out = self.setup.reward(**_reward_kwargs([self.prompt], [self.completion], [self.instance], self.row))
            if not (isinstance(out, (list, tuple)) and len(out) == 1):
                raise ValueError(f"the reward function returned {str(out)[:80]!r}: a list, one reward per completion")
            total += _number(out[0], "the reward function")
        if self.setup.get_reward:
            total += _number(self.instance.get_reward(), f"{self.name}.get_reward()")
        return total

    def random_action(self, rng):
        """A well-formed call of a random tool with random arguments, written as a model writes it (the tiny
        model's warm-up): an enum's values, integers 0-9, words of the task's text, booleans; the required
        arguments and each optional one half the time. One time in 10 (FINAL_ANSWER), a word without a call."""
        if rng.random() < FINAL_ANSWER:
            return rng.choice(self.words)
        tool = rng.choice(self.tools)["function"]
        parameters = tool.get("parameters", {})
        required = parameters.get("required", [])
        arguments = {name: self._random_value(schema, rng) for name, schema in parameters.get("properties", {}).items()
                     if name in required or rng.random() < 0.5}
        return "<tool_call>\n" + json.dumps({"name": tool["name"], "arguments": arguments}) + "\n</tool_call>"

    def _random_value(self, schema, rng, depth=0):
        if "enum" in schema:
            return rng.choice(schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):  # Optional[...] and unions: a type other than null
            kind = rng.choice([k for k in kind if k != "null"] or ["null"])
        if kind in ("integer", "number"):
            return rng.randrange(10)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "string":
            return rng.choice(self.words)
        if kind == "array" and depth < 2:
            return [self._random_value(schema.get("items", {}), rng, depth + 1) for _ in range(rng.randint(0, 2))]
        if kind == "object":
            return {}
        return None


def _as_text(result):
    return result if type(result) is str else str(result)  # as TRL's tool loop writes a result


def _error(message):
    """An error as TRL's tool loop writes it ({'error': ...}), one line, valid UTF-8."""
    return _valid_utf8(str({"error": " ".join(message.split("\n"))}))


def _valid_utf8(text):
    """A JSON escape "\\ud800" makes a lone surrogate, which a result may echo and a tokenizer refuses."""
    return text.encode("utf-8", "backslashreplace").decode()


def _number(value, source):
    """A reward as a float: None (TRL: not applicable) counts 0; anything else must be a finite number."""
    if value is None:
        return 0.0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or isinstance(value, str):
        raise ValueError(f"{source} gave {str(value)[:40]!r}: a reward is a finite number (or None)")
    return number
