"""BFCL tool calls: model text -> calls, parsed within limits and run safely, each episode on its own backends.

    parse_calls(text)                   [(name, args, kwargs) or an error message, ...]; [] for plain text
    backends = Backends(entry, long_context)   a task's backend instances, fresh for one episode
    backends.call(name, args, kwargs)   (the result as BFCL's executor writes it, whether it returned)

Model text is never evaluated and never reaches BFCL's eval()-based executor. Calls are parsed here -- Qwen's
`<tool_call>` JSON blocks, or BFCL's python list `[f(a=1), g('x')]` through `ast` with literal arguments only --
in linear time; their arguments must be plain literals within size limits (MAX_* below), and MathAPI's costly
parameters are capped (too_costly). Each call runs as a method of this episode's own backend instances under a
guard (a wall-clock and memory limit) that turns anything going wrong into an error result. No call changes
process-wide state: each episode owns its copy of the backends' module-level data, and the decimal context and
mpmath's precision are restored after every call.

How it connects: bfcl.py's environment hands each assistant message to parse_calls(), decides which calls may
run (only the tools offered now, within too_costly's limits), runs them through its episode's Backends, and
computes the reward (BFCL's checks) from what they did. Needs the optional bfcl-eval package (see bfcl.INSTALL).
"""

import ast
import contextlib
import copy
import decimal
import importlib
import inspect
import json
import keyword
import math
import os
import signal
import sys
import threading
import time

from envs import without_thinking

try:  # only these modules: bfcl_eval.utils and the eval config create folders inside site-packages
    import mpmath
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES
except ImportError:
    pass  # bfcl.BfclEnv stops first, with the install command

# limits: every step ends in bounded time and memory, whatever the text (the ground truth is far inside them)
MAX_TEXT = 100_000       # characters of one assistant message that are read (the longest ground-truth turn: ~7k)
MAX_CALLS = 64           # calls in one message (the ground truth has at most 34 in a user turn)
MAX_VALUES = 1_000       # values in one call's arguments, all nesting levels together
MAX_DEPTH = 16           # nesting of lists and objects in the arguments (the ground truth's deepest: 2)
MAX_INT_BITS = 63        # |int| < 2**63 (the ground truth's largest: 987654)
MAX_DIGITS = 1_000       # MathAPI's precision and decimal places: their cost grows with them (1e5 digits: 7 s)
MAX_POWER_BITS = 65_536  # MathAPI's power of two ints, in bits of the result (str() refuses 4300+ digits anyway)
MAX_RESULT = 100_000     # characters of one call's result (the ground truth's longest: 31,706)
STEP_SECONDS = 1.0       # wall clock for all the calls of one message, and for one user turn's check
MAX_GROWTH = 256 << 20   # bytes of resident memory one call may add
TICK = 0.05              # the guard looks at the clock and the memory this often during a call


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


def python_calls(text):
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


def parse_calls(text, python_list=True):
    """The calls in one assistant message, in order: (name, args, kwargs) or an error message each.
    [] means no call at all: plain text, which ends the user turn. python_list=False reads <tool_call> blocks
    only (trl_env.py: TRL's format, where a final answer may well be a list)."""
    if len(text) > MAX_TEXT:
        return [f"a message longer than {MAX_TEXT} characters is not read"]
    text = without_thinking(text)  # the one function every environment reads a turn with
    if "<tool_call>" in text:
        blocks = _blocks(text, "<tool_call>", "</tool_call>", limit=MAX_CALLS)
        if len(blocks) > MAX_CALLS:
            return [f"at most {MAX_CALLS} calls in one message"]
        calls = [_json_call(text[i + len("<tool_call>") : j - len("</tool_call>")]) for i, j in blocks]
        if text.count("<tool_call>") > len(blocks):
            calls.append("a <tool_call> without its </tool_call>")
        return calls
    text = text.strip()
    return python_calls(text) if python_list and text.startswith("[") and text.endswith("]") else []


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
