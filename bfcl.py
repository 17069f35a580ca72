"""BFCL v4 multi-turn as an environment (`--env bfcl`): in-process, offline, and safe with model text.

The Berkeley Function Calling Leaderboard's multi-turn categories (base, miss_func, miss_param,
long_context) are 200 scenarios each: a user asks for something over 1-8 user turns, and the agent works on
simulated backends (a file system, a trading bot, a travel agency, ...) through ~28 tools. This file plays
them through the interface of envs.py, so rollout.py and train.py need nothing special:

    env = BfclEnv(category="multi_turn_base")      # envs.make_env("bfcl", ...) builds it
    messages = env.reset(task)                      # the first user turn; env.tools: the tools offered now
    reply, done, reward, info = env.step(text)      # text: one assistant message, as decoded

One policy turn is one assistant message. A message with calls -- Qwen's `<tool_call>\\n{"name": ...,
"arguments": {...}}\\n</tool_call>` blocks, or BFCL's python list `[f(a=1), g(b='x')]` -- gets one tool
message per call; a message without calls ends the user turn, and the next user turn follows. The episode
ends after the last user turn, after BFCL's 20 steps (messages with calls) in one user turn (a failure, as
in BFCL), or after `max_turns` messages in all.

Reward: BFCL's own `multi_turn_checker` verdict on the episode's calls (binary: every user turn must leave
the backends in the ground truth's state and show its results); with `dense_reward`, the fraction of
leading user turns that pass (the checker on turn prefixes). `info["success"]` is always the binary one.

miss_func: tools named in `missed_function` are withheld, and offered again at a later user turn whose
text is BFCL's "I have updated some more functions ..."; since the system prompt is rendered once, their
JSON schemas come inside that user message, in <tools></tools> as in Qwen's system prompt (BFCL's own
prompting mode also lists them in the user message). `env.tools` stays what was offered at reset.

Split: by scenario index, the same in every category (the four are variants of the same 200 scenarios):
scenario i is held out when i % 5 == 0 (40 test, 160 train); `tasks(..., seed)` only shuffles the order.

Security: model text is never evaluated and never reaches BFCL's eval()-based executor. Calls are parsed
here (JSON, or `ast` with literal arguments only), only the tools offered now can be called, and they are
called as methods of backend instances created fresh for each episode. The checker replays canonical call
strings rebuilt from the parsed literals (`name(repr(arg), key=repr(value))`), under a unique name whose
cache entries are deleted afterwards. Needs `pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0`.
"""

import ast
import copy
import functools
import importlib
import inspect
import json
import keyword
import math
import random
import re
import uuid
from importlib import resources

import envs

try:  # only these modules: bfcl_eval.utils and the eval config create folders inside site-packages
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC as MORE_TOOLS
    from bfcl_eval.constants.default_prompts import MAXIMUM_STEP_LIMIT
    from bfcl_eval.constants.executable_backend_config import (CLASS_FILE_PATH_MAPPING,
                                                               MULTI_TURN_FUNC_DOC_FILE_MAPPING, STATELESS_CLASSES)
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
except ImportError:
    multi_turn_checker = None

INSTALL = "pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0"
CATEGORIES = envs.BFCL_CATEGORIES
HELD_OUT_EVERY = 5      # scenario i is a test task when i % 5 == 0
DEFAULT_MAX_TURNS = 32  # room for 4 messages in each user turn of the longest tasks (8 user turns)
TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
THINKING = re.compile(r"<think>.*?</think>", re.DOTALL)
CALL_FORMAT = 'call a tool as <tool_call>\n{"name": "<tool>", "arguments": {...}}\n</tool_call>'


# ----------------------------------------------------------------------------- BFCL's data, read-only
def _json_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@functools.lru_cache(maxsize=None)
def load_category(category):
    """BFCL's entries and ground truths of a category (JSON Lines inside the wheel), aligned by index."""
    data = resources.files("bfcl_eval") / "data"
    entries = _json_lines(data / f"BFCL_v4_{category}.json")
    answers = _json_lines(data / "possible_answer" / f"BFCL_v4_{category}.json")
    assert [e["id"] for e in entries] == [a["id"] for a in answers]
    return entries, [a["ground_truth"] for a in answers]


def _openapi(schema):
    """Gorilla schema types -> JSON-schema types ("dict" -> "object", "float" -> "number"), as BFCL maps them."""
    if isinstance(schema, dict):
        return {k: GORILLA_TO_OPENAPI.get(v, "string") if k == "type" and isinstance(v, str) else _openapi(v)
                for k, v in schema.items()}
    return [_openapi(v) for v in schema] if isinstance(schema, list) else schema


@functools.lru_cache(maxsize=None)
def tool_schemas(class_name):
    """The tools of one backend class in the OpenAI/Qwen form that chat templates render."""
    path = resources.files("bfcl_eval") / "data" / "multi_turn_func_doc" / MULTI_TURN_FUNC_DOC_FILE_MAPPING[class_name]
    return tuple({"type": "function", "function": {"name": d["name"], "description": d["description"],
                                                   "parameters": _openapi(d["parameters"])}} for d in _json_lines(path))


# ----------------------------------------------------------------------------- parsing model text (never eval)
def _plain(value):
    """JSON-like literals only: what repr() writes and BFCL's checker reads back as the same value."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)  # repr(inf) = 'inf' would not read back
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v) for k, v in value.items())
    return False


def _checked(name, args, kwargs):
    """(name, args, kwargs) if every part is a plain name or literal, else an error message."""
    if not isinstance(name, str) or not name.isidentifier():
        return f"{str(name)[:80]!r} is not a tool name"
    if not all(isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k) for k in kwargs):
        return f"{name}: argument names must be identifiers"
    if not (_plain(args) and _plain(kwargs)):
        return f"{name}: arguments must be plain literals (strings, numbers, booleans, null, lists, objects)"
    return name, list(args), dict(kwargs)


def _json_call(block):
    """One Qwen <tool_call> block: {"name": ..., "arguments": {...}}."""
    try:
        call = json.loads(block, parse_constant=lambda c: float("nan"))  # NaN/Infinity: rejected by _plain
        args = call.get("arguments", {}) if isinstance(call, dict) else None
        args = json.loads(args) if isinstance(args, str) else args  # arguments as a JSON string, as OpenAI writes
    except (ValueError, RecursionError) as e:
        return f"the tool call is not valid JSON ({str(e)[:80]})"
    if not isinstance(args, dict):
        return 'a tool call is {"name": "<tool>", "arguments": {...}}'
    return _checked(call.get("name"), [], args)


def _python_calls(text):
    """BFCL's python list `[f(a=1), g('x')]`, through ast: names and literal arguments only."""
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        return [f"not a python list of calls ({type(e).__name__})"]
    if not isinstance(tree, ast.List):
        return ["not a python list of calls"]
    out = []
    for node in tree.elts:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            out.append("each element must be a call tool(arg=value, ...)")
            continue
        try:
            args = [ast.literal_eval(a) for a in node.args]  # raises on names, calls, attributes, *args
            if any(k.arg is None for k in node.keywords):
                raise ValueError("**kwargs")
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
            out.append(f"{node.func.id}: arguments must be literals")
            continue
        out.append(_checked(node.func.id, args, kwargs))
    return out


def parse_calls(text):
    """The calls in one assistant message, in order: (name, args, kwargs) or an error message each.
    [] means no call at all: plain text, which ends the user turn."""
    text = THINKING.sub("", text)  # Qwen3's thinking is not an action
    if "<tool_call>" in text:
        blocks = TOOL_CALL.findall(text)
        calls = [_json_call(b) for b in blocks]
        if text.count("<tool_call>") > len(blocks):
            calls.append("a <tool_call> without its </tool_call>")
        return calls
    text = text.strip()
    return _python_calls(text) if text.startswith("[") and text.endswith("]") else []


def canonical(name, args, kwargs):
    """The call as the string BFCL's checker replays, built from parsed literals (as BFCL's convert_to_function_call)."""
    return f"{name}({','.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


def execute(method, args, kwargs):
    """Call a backend method; the result as BFCL writes it (its response check compares these strings)."""
    try:
        result = method(*args, **kwargs)
    except Exception as e:
        return f"Error during execution: {e}"
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except Exception:  # some results hold objects json cannot write
            return str(result)
    return str(result)


def _binds(method, args, kwargs):
    try:
        inspect.signature(method).bind(*args, **kwargs)
        return True
    except TypeError:
        return False


# ----------------------------------------------------------------------------- the environment
class BfclEnv:
    """One episode of a BFCL v4 multi-turn task (see the module docstring)."""

    name = "bfcl"
    tools = None  # set by reset(): the tools offered at the start, which the chat template renders

    def __init__(self, category="multi_turn_base", dense_reward=False, max_tool_output=2000, max_turns=None):
        if multi_turn_checker is None:
            raise SystemExit(f"error: --env bfcl needs the BFCL package: {INSTALL}")
        if category not in CATEGORIES:
            raise SystemExit(f"error: unknown BFCL category '{category}'; choose one of {', '.join(CATEGORIES)}")
        self.category, self.dense_reward, self.max_tool_output = category, dense_reward, max_tool_output
        self.max_turns = max_turns or DEFAULT_MAX_TURNS

    def tasks(self, split, n=None, seed=0):
        """Scenario i is held out when i % 5 == 0 in every category; "all" = the 200 of the leaderboard.
        The seed shuffles the order only (so the first n mix domains); which scenarios never changes."""
        assert split in ("train", "test", "all"), split
        entries, _ = load_category(self.category)
        keep = [i for i in range(len(entries)) if split == "all" or (i % HELD_OUT_EVERY == 0) == (split == "test")]
        random.Random(f"bfcl-{seed}").shuffle(keep)
        return [{"id": entries[i]["id"], "category": self.category, "index": i} for i in keep[:n]]

    def reset(self, task):
        entries, truths = load_category(task["category"])
        self.entry, self.truth = entries[task["index"]], truths[task["index"]]
        long_context = "long_context" in task["category"]
        self.owner = {}  # tool name -> the backend instance whose method it is
        for cls in self.entry["involved_classes"]:  # fresh instances: never BFCL's module-level cache
            instance = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)()
            if cls not in STATELESS_CLASSES:
                instance._load_scenario(copy.deepcopy(self.entry["initial_config"].get(cls, {})), long_context=long_context)
            self.owner.update({t["function"]["name"]: instance for t in tool_schemas(cls)})
        self.missed = self.entry.get("missed_function", {})
        self.offered = set(self.owner) - {name for names in self.missed.values() for name in names}
        self.tools = self._schemas(self.offered)
        self.turn, self.steps, self.used = 0, 0, 0  # user turn, messages with calls in it, messages in all
        self.calls = [[] for _ in self.truth]  # per user turn, per step: the canonical strings the checker replays
        return self._user_turn(0)

    def _schemas(self, names):
        return [t for cls in self.entry["involved_classes"] for t in tool_schemas(cls) if t["function"]["name"] in names]

    def _user_turn(self, k):
        """User turn k's messages; a miss_func turn offers the withheld tools, their schemas in the message."""
        if str(k) not in self.missed:
            return [dict(m) for m in self.entry["question"][k]]
        self.offered |= set(self.missed[str(k)])
        schemas = "\n".join(json.dumps(t) for t in self._schemas(self.missed[str(k)]))
        return [{"role": "user", "content": f"<tools>\n{schemas}\n</tools>\n{MORE_TOOLS}"}]

    def _clip(self, text):
        n = self.max_tool_output
        return text if not n or len(text) <= n else f"{text[:n]}... [truncated: {len(text) - n} more characters]"

    def step(self, text):
        self.used += 1
        calls = parse_calls(text)
        if not calls:  # no call: the user turn is over
            self.turn, self.steps = self.turn + 1, 0
            if self.turn == len(self.truth):
                return self._end("the last user turn is over")
            if self.used >= self.max_turns:
                return self._end(f"max_turns {self.max_turns} reached")
            return self._user_turn(self.turn), False, 0.0, {}
        replies, executed, malformed = [], [], False
        for call in calls:
            # only what is offered now; BFCL's eval() would run withheld tools too (miss_func_49's ground truth
            # calls one early, so it cannot pass here), and anything at all it was given
            if not isinstance(call, str) and call[0] not in self.offered:
                call = f"'{call[0]}' is not an available tool"
            if isinstance(call, str):
                malformed = True
                replies.append(f"Error: {call}; {CALL_FORMAT}")
                continue
            name, args, kwargs = call
            method = getattr(self.owner[name], name)
            malformed |= not _binds(method, args, kwargs)  # runs anyway: BFCL reports the TypeError as a result
            executed.append(canonical(name, args, kwargs))
            replies.append(self._clip(execute(method, args, kwargs)))
        if executed:
            self.calls[self.turn].append(executed)
        self.steps += 1
        info = {"malformed": True} if malformed else {}
        if self.steps > MAXIMUM_STEP_LIMIT:  # BFCL force-quits here and fails the task
            return self._end(f"forced to quit after {MAXIMUM_STEP_LIMIT} steps in a user turn", info)
        if self.used >= self.max_turns:
            return self._end(f"max_turns {self.max_turns} reached", info)
        return [{"role": "tool", "content": r} for r in replies], False, 0.0, info

    def _check(self, k):
        """BFCL's multi_turn_checker on the first k user turns: it replays both call lists on its own instances."""
        name = f"seeupo{uuid.uuid4().hex}"  # it caches instances in module globals by model name: make it unique
        try:
            category = self.entry["id"].rsplit("_", 1)[0]
            return multi_turn_checker(self.calls[:k], self.truth[:k], self.entry, category, name)
        finally:
            cache = vars(multi_turn_utils)
            for key in [key for key in cache if key.startswith(name)]:
                del cache[key]

    def _end(self, why, info=None):
        """The episode's reward: BFCL's verdict (all user turns played, the checker valid), or the dense one."""
        played = self.turn  # user turns finished
        verdict = self._check(len(self.truth)) if played == len(self.truth) else {"valid": False, "error_message": why}
        success = verdict["valid"]
        passed = len(self.truth) if success else 0
        if self.dense_reward and not success:
            while passed < played and self._check(passed + 1)["valid"]:
                passed += 1
        reward = passed / len(self.truth) if self.dense_reward else float(success)
        outcome = f"{why}; BFCL: {'valid' if success else 'invalid: ' + verdict.get('error_message', '')}"
        return [{"role": "user", "content": outcome}], True, reward, {**(info or {}), "success": success}

    def oracle_action(self):
        """The ground truth (it peeks): a user turn's calls as Qwen <tool_call> blocks in one message, then
        a message without calls. Positional ground-truth arguments get their parameter names."""
        truth = self.truth[self.turn]
        if self.steps or not truth:
            return "Done."
        blocks = []
        for name, args, kwargs in parse_calls(f"[{', '.join(truth)}]"):
            named = inspect.signature(getattr(self.owner[name], name)).bind(*args, **kwargs).arguments
            blocks.append("<tool_call>\n" + json.dumps({"name": name, "arguments": dict(named)}) + "\n</tool_call>")
        return "\n".join(blocks)
