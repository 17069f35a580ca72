"""A TRL `environment_factory` class, with its tasks file and reward, played through this project's interface.

    loaded = user_env.load_env("my_env.py:MyEnv", tasks="tasks.jsonl", reward="my_env.py:reward")  # -> load_trl
    env = loaded.factory()   # a TrlEnv: env.reset(task) -> messages, env.step(text) -> (reply, done, reward, info)

As TRL's GRPOTrainer plays such a class (docs/environments.md lists the rules in full, and where they differ):
- tasks: JSON Lines, one row per task: `prompt` (a list of chat messages) and the columns handed to `reset`; a
  `split` column ("train" or "test", absent = train), or the test rows in their own file (test_tasks);
- one instance of the class per episode, `reset(**row)` once (a deep copy of the row, `prompt` included, `split`
  left out, as TRL leaves out its `environment` column); text it returns is appended to the last prompt message;
- tools: the public methods defined in the class (plain functions; not `reset` and `get_reward`, TRL's reserved
  names; not static or class methods, which would share state across episodes), their JSON schemas made by
  transformers' get_json_schema from type hints and Google-style docstrings (`(choices: [...])` -> an enum);
- model text -> calls: bfcl_calls.parse_calls, `<tool_call>` JSON blocks only, literal arguments within its limits,
  never eval; each call runs the class's own function on this episode's instance (never a name that is not an
  offered tool, never an attribute of the instance), under bfcl_calls.guarded, which stops it once the calls of
  the message have used `tool_seconds`; its return value, str() as TRL writes it, cut at `max_tool_output`
  characters, or the error as one line in TRL's form ({'error': '...'}), is a `tool` message;
- the episode ends when the policy answers without a call, or after `max_turns` policy turns (the argument, else a
  `max_turns` class attribute, else DEFAULT_MAX_TURNS); then the reward, TRL's way: the reward function called
  with prompts=[the prompt], completions=[the assistant and tool messages since], environments=[the instance] and
  each other column of the row as a one-element list, plus `get_reward()` if the class defines it (TRL sums the
  sources). Not passed: completion_ids (an environment sees text, not token ids); trainer_state is None;
- success (the held-out measure): the reward reaches `success_at` (--success_at, else the class's own `success_at`
  attribute, else 1.0: full marks on TRL's usual 0-1 scale); an episode its turns ran out on is counted as cut.

Time limits: a thread cannot be killed, so a timed-out call on a thread would run on, holding and changing the
episode's instance while the next turns go on; a process per episode would really stop it but costs a start-up per
episode and moves the instance (which the reward reads) into another process. bfcl_calls.guarded raises inside the
call from a SIGALRM timer instead: it really stops Python code (loops, sleeps, blocking I/O), in the main thread,
where train.py and eval.py step their environments; elsewhere, or while another timer is armed, calls run
unguarded, and a single long C operation finishes before the stop. The class is trusted code; the model's text is
not. TrlEnv.random_action() gives the tiny model's warm-up well-formed random calls drawn from the tool schemas.
"""

import copy
import functools
import inspect
import json
import math
import os
import re
import time
import types
from dataclasses import dataclass, field
from typing import Callable

from support.bfcl_calls import Stopped, guarded, parse_calls
from support.loaded_env import LoadedEnv, digest, fail, is_message, load_object, one_line

DEFAULT_MAX_TURNS = 8    # policy turns of a TRL-style episode, unless the class or --max_turns says otherwise
TOOL_SECONDS = 5.0       # wall clock for all the calls of one message (bfcl_calls.guarded stops them)
MAX_TOOL_OUTPUT = 2000   # characters of one tool message (longer: cut, marked)
SUCCESS_AT = 1.0         # an episode whose reward reaches this is a success
FINAL_ANSWER = 0.1       # random_action: how often it answers without a call (the episode ends)
RESERVED = ("reset", "get_reward")  # TRL's reserved method names: never tools
CALL_FORMAT = 'call a tool as <tool_call>\n{"name": "<tool>", "arguments": {...}}\n</tool_call>'


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
                fail(f"{where}: not JSON ({one_line(e)})")
            if not isinstance(row, dict):
                fail(f"{where}: a row is a JSON object")
            if "prompt" not in row:
                fail(f"{where}: no `prompt` (a list of chat messages, e.g. [{{\"role\": \"user\", \"content\": ...}}])")
            if not (isinstance(row["prompt"], list) and row["prompt"] and all(map(is_message, row["prompt"]))):
                fail(f"{where}: `prompt` must be a list of chat messages with string content, "
                     f"e.g. [{{\"role\": \"user\", \"content\": \"...\"}}]")
            split = row.get("split", default_split)
            if split not in ("train", "test") or (default_split == "test" and split != "test"):
                fail(f"{where}: unknown split {split!r}; `split` is \"train\" or \"test\""
                     + (" (this is the test file)" if default_split == "test" else ""))
            for name in ("prompts", "completions", "environments", "completion_ids", "trainer_state", "log_extra",
                         "log_metric"):
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


def load_trl(cls, tasks, test_tasks, reward, max_turns=0, success_at=0.0, tool_seconds=TOOL_SECONDS,
             max_tool_output=MAX_TOOL_OUTPUT):
    """Check a TRL-style class with its tasks (file paths) and reward ("FILE.py:function" or None), each problem one
    line, before any model is loaded; a LoadedEnv whose factory makes TrlEnvs."""
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
        fail(f"{label}() raised {one_line(e)}: a TRL environment class is made with no argument, one per episode")
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
        fail(f"{label}.reset(**row) raised {one_line(e)} on {train[0][0]}")
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
                        "environments, trainer_state, log_extra, log_metric, **the row's other columns), without "
                        "completion_ids: take what it needs and **kwargs", **_reward_kwargs([], [], [], row))
    if callable(get_reward):
        if inspect.iscoroutinefunction(get_reward):
            fail(f"{label}.get_reward is async: make it a plain method")
        _bind_check(get_reward, f"{label}.get_reward", "it takes no argument but self", self=None)
    threshold = getattr(cls, "success_at", None)  # (--success_at, else a class attribute, else SUCCESS_AT)
    success_at = success_at or (threshold if isinstance(threshold, (int, float)) else SUCCESS_AT)
    own = getattr(cls, "max_turns", None)  # this project's extension: TRL ignores a class attribute
    own_turns = not max_turns and isinstance(own, int) and own >= 1
    max_turns = max_turns or (own if own_turns else DEFAULT_MAX_TURNS)
    setup = TrlSetup(cls=cls, name=label, functions=functions, schemas=schemas, reward=reward_fn,
                     get_reward=callable(get_reward), max_turns=max_turns, success_at=success_at,
                     tool_seconds=tool_seconds, max_tool_output=max_tool_output,
                     train=[{"id": f"{label}-train-{i}", "row": r} for i, (_, r) in enumerate(train)],
                     test=[{"id": f"{label}-test-{i}", "row": r} for i, (_, r) in enumerate(test)],
                     own_turns=own_turns)
    return LoadedEnv(label, functools.partial(TrlEnv, setup), setup.train, setup.test,
                     digest([cls, TrlEnv, parse_calls], setup.max_turns, setup.train, setup.test))


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
    own_turns: bool = False  # max_turns is the class's own: its episodes end there by design, never "cut"


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
            return self._end(f"max_turns {self.max_turns} reached", replies, info, cut=True)
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
            return _error(one_line(e)), False
        n = self.setup.max_tool_output
        if n and len(result) > n:
            result = f"{result[:n]}... [truncated: {len(result) - n} more characters]"
        return _valid_utf8(result), True

    def _end(self, why, replies, info, cut=False):
        """The episode's last reply; cut: its turns ran out, which counts (train.py's cut_max_turns) where it
        failed under a limit not the class's own (--max_turns, or DEFAULT_MAX_TURNS)."""
        reward = self._reward()
        success = reward >= self.setup.success_at
        cut = {"cut_by_max_turns": True} if cut and not success and not self.setup.own_turns else {}
        return (replies + [{"role": "user", "content": f"{why}; reward {reward:g}"}], True, reward,
                {**info, **cut, "success": success})

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
        model's warm-up): a tool not yet called in this episode while there is one (each tool once, in a random
        order, before any repeats), else any; an enum's values, integers 0-9, words of the task's text, booleans;
        the required arguments and each optional one half the time. One time in 10 (FINAL_ANSWER), a word
        without a call. (With any tool at every turn, examples/lookup_trl.py's tiny model had to learn the order
        of its tools by RL too: held-out 0.45 after 100 steps, against 0.95 after 40; docs/environments.md.)"""
        if rng.random() < FINAL_ANSWER:
            return rng.choice(self.words)
        called = {c["function"]["name"] for m in self.completion for c in m.get("tool_calls", [])}
        tool = rng.choice([t for t in self.tools if t["function"]["name"] not in called] or self.tools)["function"]
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
    return _valid_utf8(str({"error": " ".join(message.splitlines())}))


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
