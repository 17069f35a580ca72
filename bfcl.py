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

Reward: BFCL's verdict (binary: every user turn must leave the backends in the ground truth's state and show
its results), checked at the end of each user turn; with `dense_reward`, the fraction of leading user turns
that pass. `info["success"]` is always the binary one.

miss_func: tools named in `missed_function` are withheld, and offered again at a later user turn whose
text is BFCL's "I have updated some more functions ..."; since the system prompt is rendered once, their
JSON schemas come inside that user message, in <tools></tools> as in Qwen's system prompt (BFCL's own
prompting mode also lists them in the user message). `env.tools` stays what was offered at reset.

Split: by scenario index, the same in every category (the four are variants of the same 200 scenarios):
scenario i is held out when i % 5 == 0 (40 test, 160 train); `tasks(..., seed)` only shuffles the order.

Security and robustness (the README's "What can go wrong"): model text is never evaluated and never reaches
BFCL's eval()-based executor. Calls are parsed here (JSON, or `ast` with literal arguments only, in linear time),
their arguments must be plain literals within size limits (MAX_* below), only the tools offered now can be
called, MathAPI's costly parameters are capped, and each call runs as a method of this episode's own backend
instances under a guard (a wall-clock and memory limit) that turns anything going wrong into an error reply.
No call changes process-wide state: each episode owns its copy of the backends' module-level data, and the
decimal context and mpmath's precision are restored after every call. The reward is BFCL's checks
(`state_checker`, `response_checker`, in `multi_turn_checker`'s order) on what the calls really did here --
this episode's backends and the results its calls returned -- against the ground truth replayed on its own
backends: refused calls count for nothing, and nothing the model wrote is replayed. Needs
`pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0`.
"""

import ast
import contextlib
import copy
import decimal
import functools
import hashlib
import importlib
import inspect
import itertools
import json
import keyword
import math
import os
import random
import signal
import sys
import threading
import time
from importlib import resources

import envs

try:  # only these modules: bfcl_eval.utils and the eval config create folders inside site-packages
    import mpmath
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC as MORE_TOOLS
    from bfcl_eval.constants.default_prompts import MAXIMUM_STEP_LIMIT
    from bfcl_eval.constants.executable_backend_config import (CLASS_FILE_PATH_MAPPING,
                                                               MULTI_TURN_FUNC_DOC_FILE_MAPPING, STATELESS_CLASSES)
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker
except ImportError:
    state_checker = None

INSTALL = "pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0"
CATEGORIES = envs.BFCL_CATEGORIES
HELD_OUT_EVERY = 5      # scenario i is a test task when i % 5 == 0
DEFAULT_MAX_TURNS = 32  # room for 4 messages in each user turn of the longest tasks (8 user turns)
CALL_FORMAT = 'call a tool as <tool_call>\n{"name": "<tool>", "arguments": {...}}\n</tool_call>'

# limits: every step ends in bounded time and memory, whatever the text (the ground truth is far inside them)
MAX_TEXT = 100_000       # characters of one assistant message that are read (the longest ground-truth turn: ~7k)
MAX_CALLS = 64           # calls in one message (the ground truth has at most 34 in a user turn)
MAX_VALUES = 1_000       # values in one call's arguments, all nesting levels together
MAX_DEPTH = 16           # nesting of lists and objects in the arguments (the ground truth's deepest: 2)
MAX_INT_BITS = 63        # |int| < 2**63 (the ground truth's largest: 987654)
MAX_DIGITS = 1_000       # MathAPI's precision and decimal places: their cost grows with them (1e5 digits: 7 s)
MAX_POWER_BITS = 65_536  # MathAPI's power of two ints, in bits of the result (str() refuses 4300+ digits anyway)
MAX_RESULT = 100_000     # characters of one call's result (the ground truth's longest: 31,706)
KEPT = 1_000             # longer results are kept for the response check as a length and a digest
STEP_SECONDS = 1.0       # wall clock for all the calls of one message, and for one user turn's check
MAX_GROWTH = 256 << 20   # bytes of resident memory one call may add
TICK = 0.05              # the guard looks at the clock and the memory this often during a call


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
def _blocks(text, opening, closing, limit=None):
    """(start, end) of each opening...closing block, each closed by the first closing after it. One linear scan:
    a regex `opening.*?closing` rescans the rest of the text for every unclosed tag (quadratic)."""
    spans, at = [], 0
    while (limit is None or len(spans) <= limit) and (i := text.find(opening, at)) >= 0:
        j = text.find(closing, i + len(opening))
        if j < 0:  # no closing after this opening, so none after any later one either
            break
        spans.append((i, j + len(closing)))
        at = j + len(closing)
    return spans


def _without_thinking(text):
    """The text without its <think>...</think> blocks (Qwen3's thinking is not an action)."""
    kept, at = [], 0
    for i, j in _blocks(text, "<think>", "</think>"):
        kept.append(text[at:i])
        at = j
    return "".join(kept) + text[at:]


def _unbounded(values):
    """Why these argument values are not plain literals within the limits (None if they are): JSON-like types
    that repr() writes and Python reads back as the same value. Iterative: model data may nest deep."""
    stack, count = [(value, 1) for value in values], 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES or depth > MAX_DEPTH:
            return f"at most {MAX_VALUES} values in the arguments, nested at most {MAX_DEPTH} deep"
        kind = type(value)
        if kind is int and value.bit_length() > MAX_INT_BITS:
            return f"integers must be smaller than 2**{MAX_INT_BITS} in absolute value"
        if kind is float and not math.isfinite(value):  # repr(inf) = 'inf' would not read back
            return "numbers must be finite"
        if kind in (list, tuple):
            stack.extend((v, depth + 1) for v in value)
        elif kind is dict:
            stack.extend((v, depth + 1) for item in value.items() for v in item)
        elif value is not None and kind not in (bool, int, float, str):
            return "arguments must be plain literals (strings, numbers, booleans, null, lists, objects)"
    return None


def _checked(name, args, kwargs):
    """(name, args, kwargs) if every part is a plain name or literal within the limits, else an error message."""
    if not isinstance(name, str):
        return f"a tool name is a string, not {type(name).__name__}"
    if not (name.isascii() and name.isidentifier()):
        return f"{name[:80]!r} is not a tool name"
    # ASCII only: Python reads identifiers NFKC-normalised ('ｆｏｌｄｅｒ' is 'folder'), **kwargs does not
    if not all(isinstance(k, str) and k.isascii() and k.isidentifier() and not keyword.iskeyword(k) for k in kwargs):
        return f"{name}: argument names must be ASCII identifiers"
    problem = _unbounded([*args, *kwargs.values()])
    return f"{name}: {problem}" if problem else (name, list(args), dict(kwargs))


def _json_call(block):
    """One Qwen <tool_call> block: {"name": ..., "arguments": {...}}."""
    try:
        call = json.loads(block, parse_constant=lambda c: float("nan"))  # NaN/Infinity: refused by _unbounded
        args = call.get("arguments", {}) if isinstance(call, dict) else None
        args = json.loads(args) if isinstance(args, str) else args  # arguments as a JSON string, as OpenAI writes
    except Exception as e:  # ValueError, RecursionError (deep nesting), 4300+ digit ints, ...
        return f"the tool call is not valid JSON ({type(e).__name__})"
    if not isinstance(args, dict):
        return 'a tool call is {"name": "<tool>", "arguments": {...}}'
    return _checked(call.get("name"), [], args)


def _python_call(node):
    """One element of BFCL's python list: tool(arg=value, ...) with literal arguments only."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return "each element must be a call tool(arg=value, ...)"
    try:
        args = [ast.literal_eval(a) for a in node.args]  # raises on names, calls, attributes, *args
        if any(k.arg is None for k in node.keywords):
            raise ValueError("**kwargs")
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except Exception:
        return f"{node.func.id[:80]}: arguments must be literals"
    return _checked(node.func.id, args, kwargs)


def _python_calls(text):
    """BFCL's python list `[f(a=1), g('x')]`, through ast: names and literal arguments only."""
    try:
        tree = ast.parse(text, mode="eval").body
    except Exception as e:  # SyntaxError, too deep for the parser, 4300+ digit ints, ...
        return [f"not a python list of calls ({type(e).__name__})"]
    if not isinstance(tree, ast.List):
        return ["not a python list of calls"]
    if len(tree.elts) > MAX_CALLS:
        return [f"at most {MAX_CALLS} calls in one message"]
    return [_python_call(node) for node in tree.elts]


def parse_calls(text):
    """The calls in one assistant message, in order: (name, args, kwargs) or an error message each.
    [] means no call at all: plain text, which ends the user turn."""
    if len(text) > MAX_TEXT:
        return [f"a message longer than {MAX_TEXT} characters is not read"]
    text = _without_thinking(text)
    if "<tool_call>" in text:
        blocks = _blocks(text, "<tool_call>", "</tool_call>", limit=MAX_CALLS)
        if len(blocks) > MAX_CALLS:
            return [f"at most {MAX_CALLS} calls in one message"]
        calls = [_json_call(text[i + len("<tool_call>") : j - len("</tool_call>")]) for i, j in blocks]
        if text.count("<tool_call>") > len(blocks):
            calls.append("a <tool_call> without its </tool_call>")
        return calls
    text = text.strip()
    return _python_calls(text) if text.startswith("[") and text.endswith("]") else []


def canonical(name, args, kwargs):
    """A call as a string, as BFCL's convert_to_function_call writes it (for logs: the reward replays nothing)."""
    return f"{name}({','.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


DIGIT_PARAMETERS = {"square_root": "precision", "logarithm": "precision", "round_number": "decimal_places"}


def too_costly(name, arguments):
    """Why a MathAPI call would run too long (None if it would not): its cost grows with these numbers, and mpmath
    also reads a precision from a string ("100000000"), so only numbers within the limit are run."""
    parameter = DIGIT_PARAMETERS.get(name)
    if parameter in arguments:
        value = arguments[parameter]
        if type(value) not in (bool, int, float) or abs(value) > MAX_DIGITS:
            return f"{name}: {parameter} must be a number from -{MAX_DIGITS} to {MAX_DIGITS}"
    if name == "power":
        base, exponent = arguments.get("base"), arguments.get("exponent")
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            if exponent * abs(base).bit_length() > MAX_POWER_BITS:
                return f"power: the result would have more than {MAX_POWER_BITS} bits"
    return None


# ----------------------------------------------------------------------------- running calls: guarded, isolated
class Stopped(BaseException):
    """Raised by the guard inside a call; a BaseException, so that a backend's `except Exception` cannot swallow it."""


def _resident():
    """This process's resident memory in bytes (Linux; 0 elsewhere, where only the clock is guarded)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def guarded(fn, seconds):
    """fn(), stopped (Stopped) once it has run `seconds` or added MAX_GROWTH of resident memory: the last resort for
    what the static limits let through. SIGALRM ticks in the main thread, where the training loop steps the
    environment; Python runs the handler between bytecodes, so a single C operation finishes first (the static
    limits keep those short). Without a usable timer (another thread, or a timer someone else armed) fn() runs
    unguarded; the previous handler is put back."""
    if not (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is not None):
        return fn()
    deadline, start, active = time.monotonic() + seconds, _resident(), [True]

    def tick(signum, frame):  # raises on every tick past a limit, in case a bare `except:` swallowed one
        if active[0] and time.monotonic() > deadline:
            raise Stopped("it ran out of time")
        if active[0] and start and _resident() - start > MAX_GROWTH:
            raise Stopped(f"it took more than {MAX_GROWTH >> 20} MiB of memory")

    previous = signal.signal(signal.SIGALRM, tick)
    try:
        signal.setitimer(signal.ITIMER_REAL, TICK, TICK)
        return fn()
    finally:
        active[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _as_bfcl(result):
    """A result as BFCL's executor writes it (its response check compares these strings)."""
    if type(result) is str:
        return result
    if type(result) is dict:
        try:
            return json.dumps(result)
        except Exception:  # some results hold objects json cannot write
            return str(result)
    return str(result)


def _text(error):
    try:
        return str(error)
    except Exception:
        return type(error).__name__


def execute(method, args, kwargs, seconds=STEP_SECONDS):
    """Call a backend method under the guard: (the result as BFCL writes it, whether it returned). The result is
    formatted inside the guard too (str() of a huge int raises, of a cyclic object recurses)."""
    try:
        result, returned = guarded(lambda: _as_bfcl(method(*args, **kwargs)), seconds), True
    except Stopped as e:
        result, returned = f"Error: the call was stopped: {e}", False
    except RecursionError:  # its text varies with the caller's stack depth: one text for all
        result, returned = "Error during execution: maximum recursion depth exceeded", False
    except Exception as e:  # as BFCL's executor reports it
        result, returned = f"Error during execution: {_text(e)}", False
    if len(result) > MAX_RESULT:
        return f"Error: the result has {len(result)} characters, more than {MAX_RESULT}", False
    return result, returned


def _kept(result):
    """What the response check keeps of a result: a long one as its length and digest (equal iff equal, and an
    episode's 2,048 possible results stay small)."""
    if len(result) <= KEPT:
        return result
    return f"{len(result)}:{hashlib.sha256(result.encode('utf-8', 'surrogatepass')).hexdigest()}"


class Backends:
    """A task's backend instances, created fresh, with their own copy of the backend modules' module-level data:
    methods alias it (long_context's credit cards and bookings join TravelAPI's state by reference) or write it
    (VehicleControlAPI's weather), so it is swapped in around every call and the module's own is never touched."""

    def __init__(self, entry, long_context):
        modules = {cls: importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]) for cls in entry["involved_classes"]}
        self.data = copy.deepcopy({(m.__name__, k): v for m in modules.values() for k, v in vars(m).items()
                                   if not k.startswith("__") and isinstance(v, (dict, list, set))})
        self.instances, self.methods = {}, {}  # class -> instance; public method name -> bound method
        with self.active():
            for cls, module in modules.items():
                instance = self.instances[cls] = getattr(module, cls)()
                if cls not in STATELESS_CLASSES:
                    instance._load_scenario(copy.deepcopy(entry["initial_config"].get(cls, {})), long_context=long_context)
                self.methods.update((n, m) for n, m in inspect.getmembers(instance, inspect.ismethod) if not n.startswith("_"))

    @contextlib.contextmanager
    def active(self):
        """Inside: this episode's module-level data and a fresh decimal context; after: the modules' own data and
        mpmath's precision back (MathAPI sets decimal's and mpmath's precision process-wide)."""
        saved, precision = {key: getattr(sys.modules[key[0]], key[1]) for key in self.data}, mpmath.mp.prec
        for (module, name), value in self.data.items():
            setattr(sys.modules[module], name, value)
        try:
            with decimal.localcontext():
                yield
        finally:
            mpmath.mp.prec = precision
            for (module, name), value in saved.items():
                self.data[module, name] = getattr(sys.modules[module], name)  # in case a call rebound it
                setattr(sys.modules[module], name, value)

    def call(self, name, args, kwargs, seconds=STEP_SECONDS):
        """(result, whether it returned) of one call, as `execute`, inside this episode's state."""
        if name not in self.methods:  # as BFCL's eval() would report it
            return f"Error during execution: name '{name}' is not defined", False
        with self.active():
            return execute(self.methods[name], args, kwargs, seconds)


# ----------------------------------------------------------------------------- the environment
class BfclEnv:
    """One episode of a BFCL v4 multi-turn task (see the module docstring)."""

    name = "bfcl"
    tools = None  # set by reset(): the tools offered at the start, which the chat template renders

    def __init__(self, category="multi_turn_base", dense_reward=False, max_tool_output=2000, max_turns=None):
        if state_checker is None:
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
        self.long_context = "long_context" in task["category"]
        self.backends = Backends(self.entry, self.long_context)  # what the model's calls act on
        self.truth_backends = None  # the ground truth's own, replayed turn by turn as the user turns end
        tools = {t["function"]["name"] for cls in self.entry["involved_classes"] for t in tool_schemas(cls)}
        self.missed = self.entry.get("missed_function", {})
        self.offered = tools - {name for names in self.missed.values() for name in names}
        self.tools = self._schemas(self.offered)
        self.turn, self.steps, self.used = 0, 0, 0  # user turn, messages with calls in it, messages in all
        self.calls = [[] for _ in self.truth]  # per user turn, per message: the calls that ran, as strings
        self.results = [[] for _ in self.truth]  # per user turn: their results, as BFCL writes them (_kept)
        self.passed, self.failure = 0, None  # leading user turns that pass BFCL's checks; the first failure
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
        try:
            return self._step(text)
        except Exception as e:  # a bug here must not end a training run: the episode ends, unrewarded
            return [{"role": "user", "content": f"internal error ({type(e).__name__})"}], True, 0.0, {
                "malformed": True, "success": False}

    def _step(self, text):
        self.used += 1
        calls = parse_calls(text)
        if not calls:  # no call: the user turn is over
            self._check_turn(self.turn)
            self.turn, self.steps = self.turn + 1, 0
            if self.turn == len(self.truth):
                return self._end("the last user turn is over")
            if self.used >= self.max_turns:
                return self._end(f"max_turns {self.max_turns} reached")
            return self._user_turn(self.turn), False, 0.0, {}
        replies, ran, malformed = [], [], False
        deadline = time.monotonic() + STEP_SECONDS
        for call in calls:
            if not isinstance(call, str):
                call = self._refusal(*call) or call
            seconds = deadline - time.monotonic()
            if not isinstance(call, str) and seconds <= 0:
                call = f"not run: this message's calls used up their {STEP_SECONDS} s"
            if isinstance(call, str):
                malformed = True
                replies.append(f"Error: {call}; {CALL_FORMAT}")
                continue
            result, returned = self.backends.call(*call, seconds)
            malformed |= not returned  # it raised (a wrong argument: BFCL reports the TypeError) or was stopped
            ran.append(canonical(*call))
            self.results[self.turn].append(_kept(result))
            replies.append(self._clip(result))
        if ran:
            self.calls[self.turn].append(ran)
        self.steps += 1
        info = {"malformed": True} if malformed else {}
        if self.steps > MAXIMUM_STEP_LIMIT:  # BFCL force-quits here and fails the task
            return self._end(f"forced to quit after {MAXIMUM_STEP_LIMIT} steps in a user turn", info)
        if self.used >= self.max_turns:
            return self._end(f"max_turns {self.max_turns} reached", info)
        # valid UTF-8: a JSON escape "\ud800" makes a lone surrogate, which a result may echo and a tokenizer refuses
        return [{"role": "tool", "content": r.encode("utf-8", "backslashreplace").decode()} for r in replies], False, 0.0, info

    def _refusal(self, name, args, kwargs):
        """Why a parsed call is not run (None if it runs): only what is offered now (BFCL's eval() would run withheld
        tools too -- miss_func_49's ground truth calls one early, so it cannot pass here -- and anything at all),
        and not beyond MathAPI's cost limits."""
        if name not in self.offered or name not in self.backends.methods:
            return f"'{name}' is not an available tool"
        try:
            arguments = inspect.signature(self.backends.methods[name]).bind(*args, **kwargs).arguments
        except TypeError:  # it raises before running anything; BFCL's TypeError text is the reply
            return None
        return too_costly(name, arguments)

    def _truth_calls(self, k):
        """User turn k's ground truth, parsed (BFCL's strings hold literal arguments only)."""
        return [_python_calls(f"[{c}]")[0] for c in self.truth[k]]

    def _check_turn(self, k):
        """BFCL's checks of user turn k once it is over, in multi_turn_checker's order: the turn's ground truth runs on
        its own backends; unless it is empty, the turn must have calls, every backend the ground truth's state
        (state_checker) and every ground-truth result must be among the model's results so far (response_checker).
        The model's side is what its calls did here -- nothing is replayed, so only the calls that ran count, as
        they ran. After the first failure nothing more is checked, as in BFCL."""
        if self.failure:
            return
        if self.truth_backends is None:
            self.truth_backends = Backends(self.entry, self.long_context)
        truth = [_kept(self.truth_backends.call(*c)[0] if not isinstance(c, str) else f"Error during execution: {c}")
                 for c in self._truth_calls(k)]
        if self.truth[k] and not self.calls[k]:
            self.failure = f"Model response list is empty for turn {k}"
        elif self.truth[k]:
            try:
                verdict = guarded(lambda: state_checker(self.backends.instances, self.truth_backends.instances), STEP_SECONDS)
                if verdict["valid"]:
                    verdict = response_checker(list(itertools.chain(*self.results[: k + 1])), truth, k)
            except (Exception, Stopped) as e:  # e.g. a directory the model made its own ancestor
                verdict = {"valid": False, "error_message": f"the state check failed ({type(e).__name__})"}
            self.failure = None if verdict["valid"] else verdict["error_message"]
        self.passed += not self.failure

    def _end(self, why, info=None):
        """The episode's reward: BFCL's verdict (all user turns played and passed), or the dense one."""
        success = self.passed == len(self.truth)
        reward = self.passed / len(self.truth) if self.dense_reward else float(success)
        outcome = f"{why}; BFCL: {'valid' if success else 'invalid: ' + (self.failure or why)}"
        return [{"role": "user", "content": outcome}], True, reward, {**(info or {}), "success": success}

    def oracle_action(self):
        """The ground truth (it peeks): a user turn's calls as Qwen <tool_call> blocks in one message, then
        a message without calls. Positional ground-truth arguments get their parameter names."""
        if self.steps or not self.truth[self.turn]:
            return "Done."
        blocks = []
        for name, args, kwargs in self._truth_calls(self.turn):
            named = inspect.signature(self.backends.methods[name]).bind(*args, **kwargs).arguments
            blocks.append("<tool_call>\n" + json.dumps({"name": name, "arguments": dict(named)}) + "\n</tool_call>")
        return "\n".join(blocks)
