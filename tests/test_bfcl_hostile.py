"""bfcl.py and bfcl_calls.py against hostile model text. One test per class of what an adversarial run found --
a step that raises, a step that never ends, an episode that changes the process, reward for calls that were
refused, state shared between episodes -- each with more attacks than the ones reported, then a generator of
random hostile messages on all four categories: no step raises or takes long, nothing process-wide changes, an
episode's reward is that of its successful calls replayed alone, and two episodes interleaved step by step behave
as each alone. Needs the optional bfcl-eval package (skipped without it)."""

import copy
import decimal
import importlib
import json
import random
import re
import signal
import sys
import threading
import time

import pytest

pytest.importorskip("bfcl_eval", reason="needs: pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0")
import mpmath  # noqa: E402  (installed with bfcl-eval)

from support import bfcl  # noqa: E402
from support import bfcl_calls  # noqa: E402

SECONDS = 2.0  # every step must end within this here: the guard stops calls after 1 s, the rest is margin
MODULES = sorted({bfcl_calls.CLASS_FILE_PATH_MAPPING[c] for category in bfcl.CATEGORIES
                  for e in bfcl.load_category(category)[0] for c in e["involved_classes"]}
                 | {"bfcl_eval.eval_checker.multi_turn_eval.func_source_code.long_context"})


def call(name, /, **arguments):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def env_at(category="multi_turn_base", index=0):
    env = bfcl.BfclEnv(category)
    env.reset({"id": "t", "category": category, "index": index})
    return env


def process_state():
    """What a tool call could change for the whole process: decimal's context, mpmath's precision, Python's RNG,
    SIGALRM's handler and timer, the int-string and recursion limits."""
    context = decimal.getcontext()
    return (id(context), repr(context), mpmath.mp.prec, mpmath.mp.dps, random.getstate(), signal.getsignal(signal.SIGALRM),
            signal.getitimer(signal.ITIMER_REAL), sys.get_int_max_str_digits(), sys.getrecursionlimit())


def backend_data():
    """The backend modules' module-level data (deep-copied: compare it later with ==)."""
    modules = [importlib.import_module(m) for m in MODULES]
    return copy.deepcopy({(m.__name__, k): v for m in modules for k, v in vars(m).items()
                          if not k.startswith("__") and isinstance(v, (dict, list, set))})


DATA = backend_data()  # as imported, before any episode here
WORST = [0.0]  # the slowest step seen by step()


def step(env, text):
    """env.step(text), which must not raise, must end within SECONDS and must leave the process as it was."""
    before, start = process_state(), time.monotonic()
    out = env.step(text)
    seconds = time.monotonic() - start
    WORST[0] = max(WORST[0], seconds)
    assert seconds < SECONDS, (seconds, text[:200])
    assert process_state() == before, text[:200]
    return out


@pytest.fixture(autouse=True)
def backend_data_unchanged():
    yield
    assert backend_data() == DATA


def deep(n):
    return "[" * n + "]" * n


# ----------------------------------------------------------------------------- 1. a step never raises
RAISED = [  # (category, index, text): each raised or crashed the environment before
    ("multi_turn_base", 35, call("power", base=10, exponent=5000)),  # str() of a 5000-digit result
    ("multi_turn_base", 35, "[multiply(a=" + "9" * 2200 + ", b=1)]"),  # a 2200-digit literal
    ("multi_turn_base", 35, '<tool_call>{"name": "multiply", "arguments": {"a": ' + "9" * 5000 + ', "b": 1}}</tool_call>'),
    ("multi_turn_base", 10, "[cd(folder=0x" + "f" * 4000 + ")]"),  # hex literals have no digit limit
    ("multi_turn_base", 10, '<tool_call>{"name": "cd", "arguments": {"folder": %s}}</tool_call>' % deep(500)),
    ("multi_turn_base", 10, '<tool_call>{"name": "cd", "arguments": {"folder": %s}}</tool_call>' % deep(50_000)),
    ("multi_turn_base", 10, '<tool_call>{"name": %s, "arguments": {}}</tool_call>' % deep(900)),
    ("multi_turn_base", 10, '<tool_call>{"name": "cd", "arguments": "{\\"folder\\": %s}"}</tool_call>' % deep(900)),
    ("multi_turn_base", 10, f"[cd(folder={deep(150)})]"),  # under the parser's nesting limit
    ("multi_turn_base", 10, f"[cd(folder={deep(300)})]"),  # over it
    ("multi_turn_base", 10, "[cd(folder=" + "-" * 20_000 + "1)]"),
    ("multi_turn_base", 10, "[cd(folder=" + "(" * 5000 + "1" + ")" * 5000 + ")]"),
    ("multi_turn_base", 10, "[" + "ls(), " * (bfcl_calls.MAX_CALLS + 1) + "]"),
    ("multi_turn_base", 10, "\n".join([call("ls")] * (bfcl_calls.MAX_CALLS + 1))),
    ("multi_turn_base", 10, "[ls(a='" + "x" * bfcl_calls.MAX_TEXT + "')]"),
    ("multi_turn_base", 10, call("echo", content="\ud800x\x00", file_name=None)),  # a lone surrogate
    ("multi_turn_base", 10, call("cd", folder={"a": {"b": [1.5, None, True]}})),  # wrong types inside the backend
    ("multi_turn_base", 10, call("cd", folder=None)),
    ("multi_turn_base", 10, '<tool_call>{"name": "cd", "arguments": {"folder": NaN}}</tool_call>'),
    ("multi_turn_base", 10, "[cd(folder=1e999)]"),
    ("multi_turn_base", 10, "[cd(folder={1, 2}), cd(folder=b'x'), cd(folder=1j), cd(folder=...)]"),
    ("multi_turn_base", 35, call("mean", numbers=list(range(bfcl_calls.MAX_VALUES - 1)))),  # at the limit: runs
    ("multi_turn_base", 35, call("mean", numbers=list(range(bfcl_calls.MAX_VALUES)))),  # over it
    ("multi_turn_base", 35, call("standard_deviation", numbers=[[1]] * 3)),
    ("multi_turn_base", 35, call("logarithm", value=[1], base={"a": 1}, precision=5)),
]


@pytest.mark.parametrize("category, index, text", RAISED, ids=range(len(RAISED)))
def test_a_step_never_raises_and_the_episode_goes_on(category, index, text):
    env = env_at(category, index)
    reply, done, reward, info = step(env, text)
    assert not done and reward == 0.0 and all(m["role"] == "tool" for m in reply)
    assert info == ({"malformed": True} if any(m["content"].startswith("Error") for m in reply) else {}), reply
    assert all(m["content"].encode("utf-8") for m in reply)  # what a tokenizer can read
    reply, done, _, info = step(env, "[pwd()]")
    assert not done and info == {} and reply[0]["content"].startswith('{"current_working_directory"')  # it goes on


def test_a_directory_that_contains_itself_and_an_internal_error_do_not_raise():
    env = env_at(index=10)
    reply, done, _, info = step(env, "[mkdir(dir_name='c'), cp(source='c', destination='c'), find(path='c'), du()]")
    assert [m["content"] == "Error during execution: maximum recursion depth exceeded" for m in reply] == [False, False, True, True]
    assert info == {"malformed": True} and not done
    reply, done, _, info = step(env, "Done.")  # BFCL's state check then compares a cyclic tree
    assert not done and reply[0]["role"] == "user"
    reply, done, reward, info = env.step(None)  # not even a string: the episode ends, unrewarded
    assert done and reward == 0.0 and info == {"malformed": True, "success": False}


# ----------------------------------------------------------------------------- 2. every step ends
SLOW = [  # each ran for seconds to forever before, through offered tools with literal arguments, or in the parser
    call("power", base=3, exponent=10**9), call("power", base=2**62, exponent=2**62), "[power(base=7, exponent=1000000)]",
    call("square_root", number=2, precision=10**7), call("square_root", number=2, precision=1e300),
    call("logarithm", value=2, base=3, precision=10**6), call("logarithm", value=2, base=3, precision="100000000"),
    call("logarithm", value=2, base=3, precision=100_000.0), call("round_number", number=5, decimal_places=-10**9),
    "<tool_call>" * 9_000, "<tool_call>" * 4_000 + "</tool_call>" * 4_000, "<tool_call></tool_call>" * 4_000,
    "<think>" * 9_000 + call("pwd"), "<think></think>" * 6_000 + call("power", base=3, exponent=10**9),
    "x" * (10 * bfcl_calls.MAX_TEXT),
]


@pytest.mark.parametrize("text", SLOW, ids=range(len(SLOW)))
def test_costly_arguments_and_unclosed_tags_are_refused_at_once(text):
    env = env_at(index=35)  # GorillaFileSystem and MathAPI
    start = time.monotonic()
    reply, done, _, info = step(env, text)
    assert time.monotonic() - start < 0.5 and not done, time.monotonic() - start
    if text.startswith("<think>" * 2):  # an unclosed <think> is not thinking: its call runs, as with the old regex
        assert reply == [{"role": "tool", "content": '{"current_working_directory": "/alex"}'}] and info == {}
    else:
        assert info == {"malformed": True} and reply[0]["content"].startswith("Error"), reply


def needs_the_timer():
    if signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0):
        pytest.skip("a timer is armed (pytest-timeout's signal mode?): the guard stays out of its way")


def test_what_the_limits_let_through_is_stopped_by_the_guard():
    needs_the_timer()
    env = env_at(index=10)
    step(env, "[cd(folder='workspace'), mkdir(dir_name='d'), cd(folder='d'), touch(file_name='f'), cd(folder='..')]")
    double = ("cp(source='d', destination='e'), mkdir(dir_name='n'), mv(source='d', destination='n'), "
              "mv(source='e', destination='n'), mv(source='n', destination='d')")  # 5 calls: twice as many paths in d
    for _ in range(2):
        step(env, f"[{', '.join([double] * 12)}]")
    for text in [call("find", path="d"), call("du"), "[find(path='d'), du(), pwd()]"]:  # 2**24 paths
        reply, done, _, info = step(env, text)  # one time budget for all the calls of a message
        assert reply[0]["content"].startswith("Error: the call was stopped: it ") and info == {"malformed": True}
    assert reply[2]["content"].startswith("Error: not run: this message's calls used up their 1.0 s")
    assert not step(env, "Done.")[1]  # the user turn's check, with that tree, ends too


def test_the_guard_stops_loops_sleeps_and_memory_and_stays_out_of_the_way_elsewhere():
    needs_the_timer()
    def spin():
        while True:
            pass

    for fn in [spin, lambda: time.sleep(30)]:
        start = time.monotonic()
        with pytest.raises(bfcl_calls.Stopped, match="ran out of time"):
            bfcl_calls.guarded(fn, 0.2)
        assert time.monotonic() - start < 1.0
    handler = signal.getsignal(signal.SIGALRM)
    if bfcl_calls._resident():  # Linux: resident memory is watched too
        with pytest.raises(bfcl_calls.Stopped, match="MiB of memory"):
            bfcl_calls.guarded(lambda: [b"x" * (1 << 20) for _ in range(4 * (bfcl_calls.MAX_GROWTH >> 20))], 30)
    assert signal.getsignal(signal.SIGALRM) == handler and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    out = []  # outside the main thread there is no SIGALRM: it runs unguarded
    thread = threading.Thread(target=lambda: out.append(bfcl_calls.guarded(lambda: 7, 0.1)))
    thread.start()
    thread.join()
    assert out == [7]
    fired = []  # someone else's timer: left alone
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        assert bfcl_calls.guarded(lambda: time.sleep(0.05) or 8, 0.01) == 8
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
        time.sleep(0.5)
        assert fired == [1]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- 3. nothing process-wide changes
def test_precision_and_module_data_stay_with_the_episode():
    math_env, vehicle, travel = env_at(index=35), env_at("multi_turn_long_context", 61), env_at("multi_turn_long_context", 174)
    assert "VehicleControlAPI" in vehicle.backends.instances and "TravelAPI" in travel.backends.instances
    for env, text in [(math_env, call("square_root", number=2, precision=3)),  # set decimal's precision
                      (math_env, call("logarithm", value=2, base=3, precision=3)),  # and mpmath's
                      (vehicle, call("get_outside_temperature_from_weather_com")),  # writes a module-level dict
                      (travel, call("purchase_insurance", access_token="abc123xyz", insurance_type="travel",
                                    insurance_cost=-1e6, card_id="1234567812345678", booking_id="booking_901"))]:
        reply, *_ = step(env, text)
        assert not reply[0]["content"].startswith("Error"), reply
    assert math_env.results[0][:2] == ["{'result': Decimal('1.41')}", "{'result': mpf('0.630859')}"]
    assert backend_data() == DATA
    assert step(math_env, "[square_root(number=2, precision=28)]")[0][0]["content"] == "{'result': Decimal('1.414213562373095048801688724')}"


# ----------------------------------------------------------------------------- 4. reward only from calls that ran
def fullwidth(text):
    return "".join(chr(ord(c) + 0xFEE0) if c.isascii() and c.isalpha() else c for c in text)


def play(env, transform=lambda text, env: text):
    done, malformed = False, 0
    while not done:
        _, done, reward, info = env.step(transform(env.oracle_action(), env))
        malformed += bool(info.get("malformed"))
    return reward, malformed


def oracle_calls(text):
    return [json.loads(block) for block in re.findall(r"<tool_call>\n(.*?)\n</tool_call>", text, re.DOTALL)]


def as_json(text, env):
    """The same calls, keyword names in fullwidth letters (the issue's example)."""
    calls = oracle_calls(text)
    return "\n".join(call(c["name"], **{fullwidth(k): v for k, v in c["arguments"].items()}) for c in calls) or text


def as_python(text, env):
    """The same in BFCL's python form: Python reads the names NFKC-normalised, as ASCII."""
    calls = oracle_calls(text)
    return "[" + ", ".join(c["name"] + "(" + ", ".join(f"{fullwidth(k)}={v!r}" for k, v in c["arguments"].items()) + ")"
                           for c in calls) + "]" if calls else text


@pytest.mark.parametrize("index", [10, 35, 174])
def test_refused_calls_earn_nothing_and_calls_count_as_they_ran(index):
    category = "multi_turn_long_context" if index == 174 else "multi_turn_base"
    assert play(env_at(category, index)) == (1.0, 0)
    # JSON keyword names in fullwidth letters: the calls fail to bind (TypeError) and do nothing
    reward, malformed = play(env_at(category, index), as_json)
    assert reward == 0.0 and malformed > 0
    # the same in python form: Python reads them as the ASCII names, the calls run, and they count
    env = env_at(category, index)
    assert play(env, as_python) == (1.0, 0) and all("ｆ" not in c for t in env.calls for s in t for c in s)
    # refused calls next to the ground truth change nothing
    refused = call("power", base=3, exponent=10**9) + call("cd", folder=2**64) + call("launch_rocket", to="x")
    assert play(env_at(category, index), lambda text, env: text + refused if env.steps == 0 else text)[0] == 1.0


# ----------------------------------------------------------------------------- 5. episodes share nothing
ATTACK = call("purchase_insurance", access_token="abc123xyz", insurance_type="travel", insurance_cost=-1e6,
              card_id="1234567812345678", booking_id="booking_901")


def test_an_episode_never_sees_anothers_state():
    balance, attack = call("get_credit_card_balance", access_token="abc123xyz", card_id="1234567812345678"), ATTACK
    first, beside = env_at("multi_turn_long_context", 174), env_at("multi_turn_long_context", 174)
    assert step(first, balance)[0][0]["content"] == '{"card_balance": 5000.0}'
    step(first, attack)
    assert step(first, balance)[0][0]["content"] == '{"card_balance": 1005000.0}'  # its own state did change
    assert step(beside, balance)[0][0]["content"] == '{"card_balance": 5000.0}'  # the one beside it: not
    while not step(first, "Done.")[1]:  # the checker's ground-truth replay too
        pass
    assert step(env_at("multi_turn_long_context", 174), balance)[0][0]["content"] == '{"card_balance": 5000.0}'


# ----------------------------------------------------------------------------- a generator of hostile messages
NAMES = ["_load_scenario", "__init__", "eval", "exec", "__import__", "ｌｓ", "ls ", "post_tweet", "sort", "get_stock_info"]
STRINGS = ["", "workspace", "document", "ls()", "cd('..')", "__import__('os').system('true')", "../../etc/passwd",
           "<tool_call>", "</tool_call>", "<think>", "\ud800", "ｆｏｌｄｅｒ", "\x00", "é", "card_7243", "abc123xyz"]
EXPRESSIONS = ["os.system('true')", "__import__('os')", "open('/etc/passwd').read()", "lambda: 1", "x",
               "[i for i in range(10**9)]", "f'{1}'", "10**10**10", "'a' * 10**9", "(x := 1)", "*a", "**{'a': 1}",
               "ls()", "1 if True else 2", "0x" + "f" * 4000, "9" * 5000, deep(300), "1e999", "-(-1)"]


def value(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 3)
    if kind == 0:
        return rng.choice([0, 1, -1, 7, 2**63 - 1, 1 - 2**63, 2**63, 10**30, True, False, None, 10**9, -10**9])
    if kind == 1:
        return rng.choice([0.5, -0.0, 1e308, 5e-324, 187.5, float("nan"), float("inf"), -float("inf")])
    if kind == 2:
        return rng.choice(STRINGS + ["x" * rng.randint(1, 3000)])
    if kind == 3:
        return json.loads(deep(rng.choice([2, bfcl_calls.MAX_DEPTH, bfcl_calls.MAX_DEPTH + 1, 40])))
    if kind == 4:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 5:
        return {rng.choice(["a", "a-b", "", "class", "ｂ", "folder"]): value(rng, depth + 1)}
    return list(range(rng.choice([10, bfcl_calls.MAX_VALUES + 1])))


def hostile(rng, env, truth_calls):
    """One hostile assistant message for env's task."""
    tools = [t["function"] for t in env.tools]
    picks = []
    for _ in range(rng.randint(1, 3)):
        if truth_calls and rng.random() < 0.3:  # a ground-truth call, its arguments mutated
            name, args, kwargs = rng.choice(truth_calls)
            kwargs = dict(kwargs, **({rng.choice(list(kwargs) or ["x"]): value(rng)} if rng.random() < 0.7 else {}))
        else:
            tool = rng.choice(tools) if rng.random() < 0.8 else {"name": rng.choice(NAMES), "parameters": {}}
            names = list(tool["parameters"].get("properties", {})) + ["x", "class", "a-b", "ｆｏｌｄｅｒ"]
            name, args, kwargs = tool["name"], [], {rng.choice(names): value(rng) for _ in range(rng.randint(0, 3))}
        picks.append((name, args, kwargs))
    form = rng.randrange(5 if {"power", "cp"} & env.offered else 4)
    if form == 0:  # Qwen's JSON blocks (NaN and Infinity as json writes them), maybe arguments as a string
        return "\n".join(f'<tool_call>\n{json.dumps({"name": n, "arguments": json.dumps(k) if rng.random() < 0.2 else k})}'
                         "\n</tool_call>" for n, _, k in picks)
    if form == 1:  # BFCL's python form, literals as repr writes them (nan and inf are names there)
        return "[" + ", ".join(f"{n}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kw.items()])})"
                               for n, args, kw in picks) + "]"
    if form == 2:  # python form with a non-literal argument
        name = picks[0][0]
        return f"[{name}(a={rng.choice(EXPRESSIONS)}), {name}({rng.choice(EXPRESSIONS)})]"
    if form == 3:  # text that hurt the parser
        n = rng.choice([10, 1000, 8000])
        return rng.choice(["<tool_call>" * n, "<think>" * n + "[pwd()]", "</tool_call>" * n + call("pwd"),
                           "<think>x</think>" * n + call("pwd"), "[" + "pwd(), " * (bfcl_calls.MAX_CALLS + 1) + "]"])
    if "power" in env.offered and rng.random() < 0.7:  # MathAPI's costly arguments, refused, or cheap enough to run
        return rng.choice([call("power", base=rng.choice([3, 2**62, 1.5, True]), exponent=rng.choice([10**9, 5000, 2, -10**9])),
                           call("square_root", number=2, precision=rng.choice([10**7, 3, "5", 1e300, bfcl_calls.MAX_DIGITS, -1])),
                           call("logarithm", value=rng.choice([2, "1e100000000", [1]]), base=3,
                                precision=rng.choice([10**6, 3, "9" * 9, bfcl_calls.MAX_DIGITS])),
                           call("round_number", number=rng.choice([5, 2.5]), decimal_places=rng.choice([-10**9, 3, -bfcl_calls.MAX_DIGITS])),
                           call("multiply", a=2**62, b=2**62), call("mean", numbers=[1e308] * 999)])
    return rng.choice(["[mkdir(dir_name='c'), cp(source='c', destination='c'), find(path='c'), du()]",  # a cycle
                       "[" + ", ".join(["mkdir(dir_name='c'), cd(folder='c')"] * (bfcl_calls.MAX_CALLS // 2)) + "]",  # deep
                       call("echo", content="x" * 90_000, file_name=None)])


TASKS = [(c, i) for c in bfcl.CATEGORIES for i in (2, 35, 61, 128, 174)]  # the 8 backend classes, 4 categories


def script(rng, category, index):
    """A whole episode, fixed in advance: per user turn, hostile messages, maybe the ground truth, and a message
    without calls (at most 3 per turn, so neither max_turns nor BFCL's step limit cuts it short)."""
    env = env_at(category, index)
    messages = [ATTACK] if index == 174 else []  # the long-context credit card, shared before
    for k in range(len(env.truth)):
        env.turn, env.steps = k, 0
        truth_calls = [c for c in env._truth_calls(k) if not isinstance(c, str)]
        turn = [hostile(rng, env, truth_calls) for _ in range(rng.randint(0, 2))]
        turn.insert(rng.randint(0, len(turn)), env.oracle_action() if rng.random() < 0.7 else hostile(rng, env, truth_calls))
        messages += turn[:2] + ["Done."]
    return messages


def run(category, index, messages):
    """(the step outcomes, the environment): the script played until the episode ends."""
    env, outcomes = env_at(category, index), []
    for text in messages:
        outcomes.append(step(env, text))
        if outcomes[-1][1]:
            assert backend_data() == DATA
            return outcomes, env
    raise AssertionError("the episode did not end")


def hostile_episodes(seed):
    """Random hostile episodes on all four categories; every step checked by step(); returns their rewards."""
    rng = random.Random(seed)
    scripts = [(c, i, script(rng, c, i)) for c, i in TASKS for _ in range(4)]
    alone, rewards = [], []
    for category, index, messages in scripts:
        outcomes, env = run(category, index, messages)
        alone.append(outcomes)
        rewards.append(outcomes[-1][2])
        # the reward is that of the calls that ran, replayed alone as they ran (python form, turn by turn; '<' only
        # occurs in their string literals, written as an escape so that "<tool_call>" or "<think>" stay strings)
        replay = env_at(category, index)
        for turn in env.calls[: env.turn]:
            for calls in turn:
                step(replay, f"[{', '.join(calls)}]".replace("<", "\\x3c"))
            _, done, reward, info = step(replay, "Done.")
        assert done and (reward, info["success"]) == (outcomes[-1][2], outcomes[-1][3]["success"])
        assert (replay.calls, replay.results) == (env.calls, env.results)
    # two episodes interleaved step by step, on the same task or on different ones, behave as each alone
    pairs = [(0, 1), (len(scripts) - 1, len(scripts) - 2)] + [tuple(rng.sample(range(len(scripts)), 2)) for _ in range(10)]
    for a, b in pairs:  # the same task (the first two), or any two
        (ca, ia, ma), (cb, ib, mb) = scripts[a], scripts[b]
        envs_, got = [env_at(ca, ia), env_at(cb, ib)], [[], []]
        for k in range(max(len(alone[a]), len(alone[b]))):
            for j, messages in enumerate([ma, mb]):
                if k < len((alone[a], alone[b])[j]):
                    got[j].append(step(envs_[j], messages[k]))
        assert got == [alone[a], alone[b]]
    return rewards, sum(map(len, alone))


def test_hostile_messages_on_all_categories():
    start, WORST[0] = time.monotonic(), 0.0
    rewards, steps = hostile_episodes(seed=0)
    print(f"\n{len(rewards)} hostile episodes ({steps} steps), rewards {sorted(set(rewards))}, "
          f"worst step {WORST[0]:.3f} s, {time.monotonic() - start:.1f} s in all")
    assert 0 < sum(rewards) < len(rewards)  # some episodes pass despite the attacks, most do not
