"""BFCL v4 multi-turn as an environment (`--env bfcl`): in-process, offline, and safe with model text.

The Berkeley Function Calling Leaderboard's multi-turn categories (base, miss_func, miss_param,
long_context) are 200 scenarios each: a user asks for something over 1-8 user turns, and the agent works on
simulated backends (a file system, a trading bot, a travel agency, ...) through ~28 tools. This file plays
them through the interface of envs.py, so rollout.py and train.py need nothing special:

    env = BfclEnv(category="multi_turn_base")      # user_env.resolve_env builds it for --env bfcl
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

Security and robustness (the README's "What can go wrong"): model text is never evaluated. bfcl_calls.py
parses each message into calls with literal arguments within limits, and runs each call as a method of this
episode's own backend instances (bfcl_calls.Backends) under a guard, without changing process-wide state;
this file decides which calls run at all: only the tools offered now, within MathAPI's cost limits (anything
else gets an error reply and counts as malformed). The reward is BFCL's checks (`state_checker`,
`response_checker`, in `multi_turn_checker`'s order) on what the calls really did here -- this episode's
backends and the results its calls returned -- against the ground truth replayed on its own backends: refused
calls count for nothing, and nothing the model wrote is replayed. Needs
`pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0`.
"""

import functools
import hashlib
import inspect
import itertools
import json
import random
import time
from importlib import resources

from support.bfcl_calls import STEP_SECONDS, Backends, Stopped, canonical, guarded, parse_calls, python_calls, too_costly

try:  # only these modules: bfcl_eval.utils and the eval config create folders inside site-packages
    import mpmath  # noqa: F401  (bfcl_calls.py uses it; installed with bfcl-eval)
    from bfcl_eval.constants.default_prompts import DEFAULT_USER_PROMPT_FOR_ADDITIONAL_FUNCTION_FC as MORE_TOOLS
    from bfcl_eval.constants.default_prompts import MAXIMUM_STEP_LIMIT
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import response_checker, state_checker
except ImportError:
    state_checker = None

INSTALL = "pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0"
CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context")
HELD_OUT_EVERY = 5      # scenario i is a test task when i % 5 == 0
DEFAULT_MAX_TURNS = 32  # room for 4 messages in each user turn of the longest tasks (8 user turns)
CALL_FORMAT = 'call a tool as <tool_call>\n{"name": "<tool>", "arguments": {...}}\n</tool_call>'
KEPT = 1_000            # longer results are kept for the response check as a length and a digest


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


# ----------------------------------------------------------------------------- the reward's bookkeeping
def _kept(result):
    """What the response check keeps of a result: a long one as its length and digest (equal iff equal, and an
    episode's 2,048 possible results stay small)."""
    if len(result) <= KEPT:
        return result
    return f"{len(result)}:{hashlib.sha256(result.encode('utf-8', 'surrogatepass')).hexdigest()}"


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
                return self._end(f"max_turns {self.max_turns} reached", cut=True)
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
            return self._end(f"max_turns {self.max_turns} reached", info, cut=True)
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
        return [python_calls(f"[{c}]")[0] for c in self.truth[k]]

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

    def _end(self, why, info=None, cut=False):
        """The episode's reward: BFCL's verdict (all user turns played and passed), or the dense one. cut: its
        turns ran out, which counts (train.py's cut_max_turns) where it failed."""
        success = self.passed == len(self.truth)
        reward = self.passed / len(self.truth) if self.dense_reward else float(success)
        outcome = f"{why}; BFCL: {'valid' if success else 'invalid: ' + (self.failure or why)}"
        cut = {"cut_by_max_turns": True} if cut and not success else {}
        return [{"role": "user", "content": outcome}], True, reward, {**(info or {}), **cut, "success": success}

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
