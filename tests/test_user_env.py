"""user_env.py: `--env FILE.py:Class` of either kind, checked before any model is loaded (each problem one line);
trl_env.py: the adapter that plays a TRL environment_factory class -- examples/lookup_trl.py played perfectly and
at random, tools from get_json_schema, only offered tools ever called, one instance per episode, errors and
timeouts as tool messages, the reward TRL's way -- and the attack texts of tests/test_bfcl_hostile.py (rebuilt
here without BFCL, which CI does not install) aimed at the adapter: no crash, no hang, no private call, no state
carried over."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from support import bfcl_calls
import envs
from support import loaded_env, user_env
from conftest import LOOKUP_TRL, LOOKUP_TRL_TASKS, ROOT, SMALL, records, run_train

LIMIT = 0.3  # tool_seconds in these tests: a stopped call ends well within SECONDS
SECONDS = 2.0


def call(name, /, **arguments):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def lookup(**kwargs):
    return user_env.load_env(f"{LOOKUP_TRL}:LookupTRL", tasks=LOOKUP_TRL_TASKS, reward=f"{LOOKUP_TRL}:reward", **kwargs)


def write(folder, name, text):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text) if name.endswith(".py") else text)
    return path


def rows_file(folder, rows, name="tasks.jsonl"):
    return write(folder, name, "".join(json.dumps(r) + "\n" for r in rows))


# A TRL-style class with a tool for each thing that can go wrong, and names that must never be called.
SPY = '''
    import time
    CALLS = []  # (id of the instance, what ran)

    class Spy:
        data = {"shared": 1}

        def reset(self, topic, **kwargs):
            CALLS.append((id(self), "reset"))
            self.count = 0
            self.echo = lambda value: "shadowed"  # an instance attribute named like a tool: never called
            return f" ({topic})"

        def get_reward(self) -> float:
            return float(self.count)

        def bump(self, by: int = 1) -> int:
            """Add to this episode's counter.

            Args:
                by: How much to add.
            """
            CALLS.append((id(self), "bump"))
            self.count += by
            return self.count

        def echo(self, value: str) -> str:
            """Say it back.

            Args:
                value: Anything.
            """
            return value

        def mode(self, kind: str, loud: bool = False) -> str:
            """Pick a mode.

            Args:
                kind: The mode. (choices: ["fast", "slow"])
                loud: Whether to shout.
            """
            return kind.upper() if loud else kind

        def fail(self, text: str) -> str:
            """Raise an error.

            Args:
                text: Its text.
            """
            raise ValueError(text)

        def nap(self, seconds: float) -> str:
            """Sleep.

            Args:
                seconds: How long.
            """
            time.sleep(seconds)
            return "awake"

        def spin(self) -> str:
            """Loop forever, swallowing every Exception."""
            while True:
                try:
                    sum(range(1000))
                except Exception:
                    pass

        def power(self, n: int) -> int:
            """Ten to the n.

            Args:
                n: The exponent.
            """
            return 10 ** min(n, 10_000)

        def _secret(self) -> str:
            """Private."""
            CALLS.append((id(self), "_secret"))

        @staticmethod
        def helper(x: int) -> int:
            """A static method.

            Args:
                x: Anything.
            """
            CALLS.append((None, "helper"))

        @classmethod
        def shared(cls) -> str:
            """A class method: its state would outlive the episode."""
            CALLS.append((None, "shared"))

        @property
        def prop(self) -> str:
            CALLS.append((id(self), "prop"))
            return "p"

    def reward(completions, environments, **kwargs):
        return [0.0 for _ in environments]
'''
SPY_TOOLS = ["bump", "echo", "fail", "mode", "nap", "power", "spin"]
NEVER = ["_secret", "helper", "shared", "prop", "data", "reset", "get_reward", "__init__", "__class__", "CALLS",
         "eval", "exec", "__import__", "ｅｃｈｏ", "echo ", "count"]


@pytest.fixture
def spy(tmp_path):
    """(load_env's result for Spy, its module): tasks on two topics; the reward is get_reward() alone."""
    path = write(str(tmp_path), "spy.py", SPY)
    tasks = rows_file(str(tmp_path), [{"prompt": [{"role": "user", "content": f"Count {t}"}], "topic": t,
                                       "split": s} for t, s in [("apples", "train"), ("pears", "test")]])
    loaded = user_env.load_env(f"{path}:Spy", tasks=tasks, max_turns=8, tool_seconds=LIMIT, max_tool_output=100)
    return loaded, loaded_env._module_from_file(os.path.realpath(path))


def process_state():
    return signal.getsignal(signal.SIGALRM), signal.getitimer(signal.ITIMER_REAL), random.getstate()


def step(env, text):
    """env.step(text): it must not raise, must end within SECONDS and must leave the process as it was."""
    before, start = process_state(), time.monotonic()
    out = env.step(text)
    assert time.monotonic() - start < SECONDS, text[:200]
    assert process_state() == before, text[:200]
    reply, done, reward, info = out
    assert all(isinstance(m["content"], str) and m["content"].encode("utf-8") for m in reply)
    assert all("\n" not in m["content"] for m in reply if m["content"].startswith("{'error'"))  # one line
    return out


# ----------------------------------------------------------------------------- loading: one line per problem
P_OK = '''
    class P:
        name, tools, max_turns = "p", None, 2
        @staticmethod
        def tasks(split, n=None):
            return [{"id": f"{split}-0"}]
        def reset(self, task):
            return [{"role": "user", "content": "go"}]
        def step(self, text):
            return [{"role": "user", "content": "ok"}], True, 0.0, {"success": False}
'''
T_OK = '''
    class T:
        def reset(self, **kwargs):
            self.n = 0
        def tick(self, k: int) -> int:
            """Tick.

            Args:
                k: How many.
            """
            return k
    def reward(completions, environments, **kwargs):
        return [0.0]
'''
ROW = {"prompt": [{"role": "user", "content": "hi"}]}
INIT = "def __init__(self, {}):\n            pass\n        "  # a constructor that needs an argument
TRAIN_TEST = [ROW, {**ROW, "split": "test"}]

BAD = [  # (file's source, its class, tasks rows or None, load_env's other arguments, what the one line says)
    (P_OK, "", None, {}, "give FILE.py:Name or package.module:Name"),
    (P_OK, "Nope", None, {}, "defines no Nope"),
    ("x = 1\n", "x", None, {}, "int x is not a class"),
    ("def f(:\n", "P", None, {}, "importing"),
    ("class P:\n    pass\n", "P", None, {}, "has neither step()"),
    # this project's interface
    ("class P:\n    def step(self, text): pass\n", "P", None, {}, "P lacks tasks, reset"),
    (P_OK.replace("def step(self, text)", "def step(self)"), "P", None, {}, "P.step(): it must take one argument"),
    (P_OK.replace("def reset(self, task)", "def reset(self)"), "P", None, {}, "P.reset(): it must take one argument"),
    (P_OK.replace('None, 2', 'None, 0'), "P", None, {}, "P.max_turns must be an int"),
    (P_OK.replace("name, tools, max_turns", "name, tools, _"), "P", None, {}, "P.max_turns must be an int >= 1"),
    (P_OK.replace("name, tools, max_turns", "name, _, max_turns"), "P", None, {}, "P.tools must be None or a list"),
    (P_OK.replace('[{"id": f"{split}-0"}]', '[{"id": 1}] if split == "train" else []'), "P", None, {},
     "P.tasks('test') is empty"),
    (P_OK.replace('[{"id": f"{split}-0"}]', '[{"name": 1}]'), "P", None, {}, 'each task must be a dict with an "id"'),
    (P_OK.replace('return [{"role": "user", "content": "go"}]', 'return "go"'), "P", None, {},
     "P.reset(task) must return chat messages"),
    (P_OK.replace('return [{"role": "user", "content": "ok"}], True, 0.0, {"success": False}', 'return "ok"'), "P",
     None, {}, "P.step(text) must return (reply messages, done, reward, info)"),
    (P_OK.replace('return [{"role": "user", "content": "ok"}], True', 'return 1 / 0, True'), "P", None, {},
     "P.step('') raised ZeroDivisionError"),
    (P_OK, "P", None, {"need_random_action": True}, "P has no random_action(rng): --model tiny's warm-up"),
    (P_OK, "P", None, {"max_turns": 3}, "P(max_turns=3): got an unexpected keyword argument 'max_turns'"),
    (P_OK.replace("def reset(self, task)", INIT.format("size") + "def reset(self, task)"), "P", None, {},
     "P(): missing a required argument: 'size'"),
    (P_OK, "P", TRAIN_TEST, {}, "--tasks is for TRL-style classes; P has step()"),
    # a TRL-style class
    (T_OK, "T", None, {}, "T is a TRL-style class (reset, no step): give its tasks with --tasks"),
    (T_OK, "T", [{"content": "hi"}], {}, "line 1: no `prompt`"),
    (T_OK, "T", [{"prompt": "hi"}], {}, "line 1: `prompt` must be a list of chat messages"),
    (T_OK, "T", [ROW, {**ROW, "split": "dev"}], {}, "line 2: unknown split 'dev'"),
    (T_OK, "T", "not json\n", {}, "line 1: not JSON"),
    (T_OK, "T", [ROW], {}, "no test rows: add rows with \"split\": \"test\", or give --test_tasks"),
    (T_OK, "T", [{**ROW, "split": "test"}], {}, "no train rows"),
    (T_OK, "T", [{**ROW, "completions": 1}], {}, "a column cannot be named 'completions'"),
    (T_OK, "T", TRAIN_TEST, {}, "no reward for T: give --reward FILE.py:function"),
    (T_OK, "T", TRAIN_TEST, {"reward": "{file}:nope"}, "defines no nope"),
    (T_OK.replace("completions, environments, **kwargs", "completions, environments, completion_ids"), "T",
     TRAIN_TEST, {"reward": "{file}:reward"}, "missing a required argument: 'completion_ids'"),
    (T_OK.replace("completions, environments, **kwargs", "completions, environments"), "T", TRAIN_TEST,
     {"reward": "{file}:reward"}, "take what it needs and **kwargs"),
    (T_OK.replace("def reward(", "async def reward("), "T", TRAIN_TEST, {"reward": "{file}:reward"},
     "not a plain function"),
    (T_OK.replace("k: How many.", ""), "T", TRAIN_TEST, {"reward": "{file}:reward"},
     "docstring has no description for the argument 'k'"),
    (T_OK.replace("k: int", "k"), "T", TRAIN_TEST, {"reward": "{file}:reward"},
     "T.tick: Argument k is missing a type hint"),
    (T_OK.replace("def tick", "def _tick"), "T", TRAIN_TEST, {"reward": "{file}:reward"}, "T offers no tools"),
    (T_OK.replace("def tick", "async def tick"), "T", TRAIN_TEST, {"reward": "{file}:reward"}, "T.tick is async"),
    (T_OK.replace("def reset(self, **kwargs)", "def reset(self, prompt)"), "T", [{**ROW, "level": 3}, TRAIN_TEST[1]],
     {"reward": "{file}:reward"}, "line 1: T.reset(**row): got an unexpected keyword argument 'level'"),
    (T_OK.replace("self.n = 0", "return {'text': 1}"), "T", TRAIN_TEST, {"reward": "{file}:reward"},
     "T.reset must return None or text"),
    (T_OK.replace("def reset(self, **kwargs)", INIT.format("seed") + "def reset(self, **kwargs)"), "T", TRAIN_TEST,
     {"reward": "{file}:reward"}, "T() raised TypeError"),
]


@pytest.mark.parametrize("source, name, rows, kwargs, says", BAD, ids=range(len(BAD)))
def test_each_problem_is_one_line_that_names_it(tmp_path, source, name, rows, kwargs, says):
    path = write(str(tmp_path), "mine.py", source)
    kwargs = {k: v.format(file=path) for k, v in kwargs.items()} if kwargs.get("reward") else dict(kwargs)
    if rows is not None:
        folder = str(tmp_path)
        kwargs["tasks"] = write(folder, "t.jsonl", rows) if isinstance(rows, str) else rows_file(folder, rows)
    with pytest.raises(SystemExit) as e:
        user_env.load_env(f"{path}:{name}" if name else path, **kwargs)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message and says in message, message


def test_files_modules_and_a_separate_test_file(tmp_path):
    for spec in ["no/such/file.py:X", "no_such_package.module:X"]:
        with pytest.raises(SystemExit, match="no file no/such/file.py|importing no_such_package.module failed"):
            user_env.load_env(spec)
    # this project's interface, as is: by module (the class itself) or by file (its own copy of the module)
    loaded = user_env.load_env("envs:RelayEnv", max_turns=3, need_random_action=True)
    assert loaded.name == "relay" and loaded.factory().max_turns == 3 and isinstance(loaded.factory(), envs.RelayEnv)
    assert loaded.train_tasks == envs.RelayEnv.tasks("train") and loaded.test_tasks == envs.RelayEnv.tasks("test")
    by_file = user_env.load_env(os.path.join(ROOT, "envs.py") + ":LookupEnv")
    assert by_file.train_tasks == envs.LookupEnv.tasks("train") and by_file.factory().max_turns == 2
    # test rows in their own file; the tasks file's rows without a split are training rows
    path = write(str(tmp_path), "mine.py", T_OK)
    test_file = rows_file(str(tmp_path), [ROW, ROW, {**ROW, "split": "test"}], "test.jsonl")
    loaded = user_env.load_env(f"{path}:T", tasks=rows_file(str(tmp_path), [ROW]), test_tasks=test_file,
                               reward=f"{path}:reward")
    assert (len(loaded.train_tasks), len(loaded.test_tasks)) == (1, 3) and loaded.factory().max_turns == 8
    assert loaded.test_tasks[2] == {"id": "T-test-2", "row": {**ROW, "split": "test"}}
    # with a tasks file, a class without tasks() is TRL's kind even with a `step`: a game's step(action) is a tool
    game = write(str(tmp_path), "game.py", T_OK.replace("def tick", "def step"))
    env = user_env.load_env(f"{game}:T", tasks=rows_file(str(tmp_path), TRAIN_TEST), reward=f"{game}:reward").factory()
    env.reset(env.tasks("train")[0])
    assert env.step(call("step", k=4))[0] == [{"role": "tool", "name": "step", "content": "4"}]
    with pytest.raises(SystemExit, match='line 1: unknown split \'train\'.*this is the test file'):
        user_env.load_env(f"{path}:T", tasks=rows_file(str(tmp_path), [ROW]), reward=f"{path}:reward",
                          test_tasks=rows_file(str(tmp_path), [{**ROW, "split": "train"}], "t2.jsonl"))


# ----------------------------------------------------------------------------- examples/lookup_trl.py
def test_lookup_trl_tasks_file_is_what_its_script_writes_with_lookups_held_out_rule(tmp_path):
    make_tasks = loaded_env.load_object(f"{LOOKUP_TRL}:make_tasks", "test")
    assert make_tasks(str(tmp_path / "t.jsonl")) == 1024
    assert (tmp_path / "t.jsonl").read_text() == open(LOOKUP_TRL_TASKS).read()
    loaded = lookup()
    assert (len(loaded.train_tasks), len(loaded.test_tasks)) == (768, 256)
    assert loaded.digest == lookup().digest != lookup(max_turns=3).digest  # the tiny model's cache key
    pair = lambda t: (envs.LookupEnv.lockers.index(t["row"]["ask"]) + t["row"]["codes"][t["row"]["ask"]]) % 4
    assert all(pair(t) == 0 for t in loaded.test_tasks) and all(pair(t) != 0 for t in loaded.train_tasks)
    assert len({json.dumps(t["row"], sort_keys=True) for t in loaded.train_tasks + loaded.test_tasks}) == 1024


def test_lookup_trl_tools_are_get_json_schemas_with_the_docstrings_enum():
    from transformers.utils import get_json_schema
    env = lookup().factory()
    cls = loaded_env.load_object(f"{LOOKUP_TRL}:LookupTRL", "test")
    assert env.tools == [get_json_schema(cls().answer), get_json_schema(cls().get)]
    get = env.tools[1]["function"]
    assert get["name"] == "get" and get["parameters"]["properties"]["locker"]["enum"] == ["A", "B", "C", "D"]
    assert env.tools[0]["function"]["parameters"]["properties"]["code"]["type"] == "integer"


@pytest.mark.parametrize("split", ["train", "test"])
def test_lookup_trl_played_perfectly_earns_1_and_partly_half(split):
    loaded = lookup()
    for task in getattr(loaded, f"{split}_tasks"):
        ask, codes = task["row"]["ask"], task["row"]["codes"]
        env = loaded.factory()
        assert env.reset(task) == [{"role": "user", "content": f"Code of {ask}?"}]
        opened = [{"role": "tool", "name": "get", "content": f"{ask} has {codes[ask]}"}]
        assert step(env, call("get", locker=ask)) == (opened, False, 0.0, {})
        reply, done, reward, info = step(env, call("answer", code=codes[ask]))
        assert reply[0]["content"] == "correct" and done and reward == 1.0 and info == {"success": True}
        env.reset(task)  # the asked locker, then a wrong code: half
        step(env, "<think>hmm</think>" + call("get", locker=ask))
        assert step(env, call("answer", code=codes[ask] + 1))[2:] == (0.5, {"success": False})
        env.reset(task)  # the right code without opening the locker, then a final answer: nothing
        step(env, call("answer", code=codes[ask]))
        assert step(env, "It is done.")[1:] == (True, 0.0, {"success": False})
        env.reset(task)  # nothing counts after the answer (in lookup it ends the episode): opening the locker neither
        step(env, call("answer", code=codes[ask]))
        assert step(env, call("get", locker=ask)) == ([{"role": "tool", "name": "get", "content": "already answered"},
                                                       {"role": "user", "content": "max_turns 2 reached; reward 0"}],
                                                      True, 0.0, {"success": False})


def test_lookup_trl_random_actions_are_well_formed_at_their_rates():
    """random_action: 1 in 10 a final answer, else a tool not called yet in the episode (then any); get's locker and
    answer's code from their enums. Over 2 turns: turn 1 get or answer (0.45 each), turn 2 the other one (0.9); a
    get after the answer opens nothing, so the asked locker is opened at a = 0.45/4 and success is a * 0.9 / 4."""
    loaded, rng, n = lookup(), random.Random(0), 6000
    opened = success = finals = 0
    orders, seen = {}, set()
    for i in range(n):
        env = loaded.factory()
        env.reset(loaded.train_tasks[i % len(loaded.train_tasks)])
        done, texts = False, []
        while not done:
            texts.append(env.random_action(rng))
            _, done, reward, info = env.step(texts[-1])
            assert not info.get("malformed")
        finals += sum("<tool_call>" not in t for t in texts)
        seen.update(t for t in texts if "<tool_call>" in t)
        order = " ".join(t.split('"')[3] if "<tool_call>" in t else "final" for t in texts)
        orders[order] = orders.get(order, 0) + 1
        opened += env.instance.ask in env.instance.opened
        success += info["success"]
    a = 0.45 / 4
    for count, p in [(opened, a), (success, a * 0.9 / 4), (finals, 0.1 + 0.9 * 0.1), (orders["get answer"], 0.45 * 0.9),
                     (orders.get("get get", 0) + orders.get("answer answer", 0), 0)]:
        assert abs(count / n - p) <= 4 * (p * (1 - p) / n) ** 0.5, (count / n, p)
    assert seen == {call("get", locker=x) for x in "ABCD"} | {call("answer", code=k) for k in range(4)}


def test_random_action_draws_every_schema_type(spy):
    loaded, _ = spy
    env, rng = loaded.factory(), random.Random(1)
    env.reset(loaded.train_tasks[0])
    seen = {}
    for _ in range(3000):
        text = env.random_action(rng)
        for c in bfcl_calls.parse_calls(text):
            for k, v in c[2].items():
                seen.setdefault((c[0], k), set()).add(json.dumps(v))
    assert seen[("mode", "kind")] == {'"fast"', '"slow"'} and seen[("mode", "loud")] == {"true", "false"}
    assert seen[("bump", "by")] == {str(k) for k in range(10)}
    assert seen[("echo", "value")] <= {'"Count"', '"apples"'}  # words of the task's text


# ----------------------------------------------------------------------------- the adapter's guarantees
def test_only_offered_public_methods_of_the_class_run(spy):
    loaded, module = spy
    env = loaded.factory()
    assert [t["function"]["name"] for t in env.tools] == SPY_TOOLS
    messages = env.reset(loaded.train_tasks[0])
    assert messages == [{"role": "user", "content": "Count apples (apples)"}]  # reset's text, appended as TRL does
    for name in NEVER:
        module.CALLS.clear()
        env.reset(loaded.train_tasks[0])
        reply, done, _, info = step(env, call(name) + call(name, value="x"))
        assert not done and info == {"malformed": True} and len(reply) == 2, reply
        assert all(f"'Tool {name} not found.'" in m["content"] or "is not a tool name" in m["content"] for m in reply)
        assert [what for _, what in module.CALLS] == ["reset"]
    assert module.Spy.data == {"shared": 1}
    assert step(env, call("echo", value="real"))[0][0]["content"] == "real"  # the class's echo, not the instance's


def test_one_instance_per_episode_and_nothing_carried_over(spy):
    loaded, module = spy
    task = loaded.train_tasks[0]
    first, second = loaded.factory(), loaded.factory()
    module.CALLS.clear()
    first.reset(task)
    assert step(first, call("bump", by=5))[0][0]["content"] == "5"
    assert step(first, call("bump"))[0][0]["content"] == "6"
    second.reset(task)
    assert step(second, call("bump", by=5))[0][0]["content"] == "5"  # the same reply to the same call
    first.reset(task)  # a new episode on the same object: a new instance too
    assert step(first, call("bump", by=5))[0][0]["content"] == "5"
    resets = [i for i, what in module.CALLS if what == "reset"]
    assert len(resets) == len(set(resets)) == 3  # three instances, each reset once
    assert task["row"] == {"prompt": [{"role": "user", "content": "Count apples"}], "topic": "apples", "split": "train"}


def test_errors_and_timeouts_are_one_line_tool_messages_and_the_episode_goes_on(spy):
    loaded, _ = spy
    env = loaded.factory()
    env.reset(loaded.train_tasks[0])
    reply, done, _, info = step(env, call("fail", text="first line\nsecond line"))
    assert reply == [{"role": "tool", "name": "fail", "content": "{'error': 'ValueError: first line'}"}]
    assert not done and info == {"malformed": True}
    for text in [call("nap", seconds=30), call("spin")]:
        start = time.monotonic()
        reply, done, _, info = step(env, text)
        assert time.monotonic() - start < LIMIT + 0.5 and not done and info == {"malformed": True}
        assert reply[0]["content"] == "{'error': 'the call was stopped: it ran out of time'}", reply
    # one time budget for all the calls of a message: what is left after a stopped call is not run
    reply, _, _, _ = step(env, call("nap", seconds=30) + call("bump"))
    assert "used up their 0.3 s" in reply[1]["content"]
    assert step(env, call("power", n=5000))[0][0]["content"].startswith("{'error': 'ValueError: Exceeds the limit")
    cut = "x" * 100 + "... [truncated: 400 more characters]"
    assert step(env, call("echo", value="x" * 500))[0][0]["content"] == cut
    assert step(env, call("bump", by="2"))[0][0]["content"].startswith("{'error': \"TypeError: unsupported operand")
    reply, done, reward, info = step(env, call("bump", by=2))  # the sixth turn: max_turns
    assert done and reward == 2.0 and info == {"success": True}  # get_reward: the count; success at 1


def test_the_reward_is_called_the_trl_way(tmp_path):
    path = write(str(tmp_path), "mine.py", T_OK + '''
    SEEN = []
    def spy_reward(prompts, completions, environments, level, **kwargs):
        SEEN.append(dict(prompts=prompts, completions=completions, environments=environments, level=level, **kwargs))
        return [environments[0].n + level[0]]
    ''')
    rows = [{**ROW, "level": 3}, {**ROW, "level": 4, "split": "test"}]
    loaded = user_env.load_env(f"{path}:T", tasks=rows_file(str(tmp_path), rows), reward=f"{path}:spy_reward",
                               max_turns=3)
    env = loaded.factory()
    env.reset(loaded.train_tasks[0])
    step(env, "Let me tick." + call("tick", k=2))
    reply, done, reward, info = step(env, "Done: 2.")
    seen = loaded_env._module_from_file(os.path.realpath(path)).SEEN[-1]
    assert done and reward == 3.0 and info == {"success": True}
    assert seen["prompts"] == [ROW["prompt"]] and seen["environments"] == [env.instance] and seen["level"] == [3]
    assert seen["completions"] == [[
        {"role": "assistant", "content": "Let me tick.", "tool_calls": [{"type": "function", "function": {
            "name": "tick", "arguments": {"k": 2}}}]},
        {"role": "tool", "name": "tick", "content": "2"},
        {"role": "assistant", "content": "Done: 2."}]]
    assert seen["trainer_state"] is None and {"log_extra", "log_metric"} <= set(seen) and "split" not in seen


def test_the_rollout_loop_plays_it_through_the_tiny_template_with_its_call_tokens():
    """rollout.rollout() with the tiny tokenizer and the tokens lookup_trl's tiny model adds: the tools one line each,
    a call in 6 tokens that decode to its text, new embeddings the mean of their pieces', the perfect policy paid 1."""
    import torch
    from support import tiny
    from rollout import SamplingArgs, rollout
    loaded, tokenizer = lookup(), tiny.tiny_tokenizer(0)
    model, get_c = tiny.tiny_model(tokenizer, 0), call("get", locker="C")
    opening = '<tool_call>\n{"name": "get", "arguments": {'
    pieces, opening_pieces = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in (get_c, opening))
    tiny.add_tokens(model, tokenizer, tiny.call_tokens(loaded.factory().tools))
    ids = tokenizer(get_c, add_special_tokens=False)["input_ids"]
    assert (len(pieces), len(ids)) == (63, 6) and tokenizer.decode(ids) == get_c
    assert ids[0] == tokenizer.convert_tokens_to_ids(opening)
    for weights in (model.lm_head.weight, model.get_input_embeddings().weight):
        assert torch.equal(weights[ids[0]], weights[opening_pieces].mean(0))

    def perfect(episode):
        row = episode.task["row"]
        return call("answer", code=row["codes"][row["ask"]]) if episode.turn_spans else call("get", locker=row["ask"])

    episodes = rollout(tiny.ScriptedPolicy(tokenizer, perfect), loaded.factory, loaded.test_tasks[:4], 2,
                       SamplingArgs(max_new_tokens=16))
    assert [(e.reward, e.success, len(e.turn_spans)) for e in episodes] == [(1.0, True, 2)] * 8
    assert len({id(e.env) for e in episodes}) == 8 and len(episodes[0].turn_spans[0]) == 2
    text = tokenizer.decode(episodes[0].token_ids)
    assert text.startswith('<|im_start|>system\n<tools>\nanswer(code: 0|1|2|3)\nget(locker: "A"|"B"|"C"|"D")\n'
                           '</tools><|im_end|>\n<|im_start|>user\nCode of ')
    assert "<|im_start|>user\n<tool_response>\n" in text
    # an assistant message with TRL's tool_calls renders as the model writes them: bfcl_calls parses it back
    asked = {"type": "function", "function": {"name": "get", "arguments": {"locker": "C"}}}
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "", "tool_calls": [asked]}],
                                             tools=loaded.factory().tools, tokenize=False)
    assert get_c in rendered
    assert bfcl_calls.parse_calls(rendered.split("assistant\n")[1]) == [("get", [], {"locker": "C"})]


def test_one_function_resolves_a_built_in_and_a_class_of_yours_with_one_line_per_problem():
    from support.user_env import EnvArgs, resolve_env
    built_in = resolve_env(EnvArgs(env="relay", max_turns=3))
    assert (built_in.name, built_in.factory().max_turns, built_in.digest) == ("relay", 3, "")
    assert built_in.train_tasks == envs.RelayEnv.tasks("train") and built_in.test_tasks == envs.RelayEnv.tasks("test")
    yours = resolve_env(EnvArgs(env=f"{LOOKUP_TRL}:LookupTRL", tasks=LOOKUP_TRL_TASKS,
                                reward=f"{LOOKUP_TRL}:reward"), True)
    assert (yours.name, yours.train_tasks, yours.test_tasks, yours.digest) == \
        (lookup().name, lookup().train_tasks, lookup().test_tasks, lookup().digest)
    for args, says in [(EnvArgs(env="appworld"), "choose one of lookup, guess, relay, bfcl, or give a class of yours"),
                       (EnvArgs(tasks="64"), "the number of held-out tasks is --eval_tasks 64"),
                       (EnvArgs(env="guess", reward=f"{LOOKUP_TRL}:reward"), "--reward is for a TRL-style class")]:
        with pytest.raises(SystemExit) as e:
            resolve_env(args)
        assert str(e.value).startswith("error: ") and says in str(e.value), e.value


LONG = """
class Investigate:
    name, max_turns, tools = "investigate", 4, None
    def __init__(self):
        self.turn = 0
    @staticmethod
    def tasks(split, n=None):
        return [{"id": f"{split}-{i}", "case": i} for i in range(4)]
    def reset(self, task):
        self.turn = 0
        return [{"role": "user", "content": "Ledger entry 4411 moved to account 93; " * 150}]
    def step(self, text):
        self.turn += 1
        done = self.turn >= self.max_turns
        return [{"role": "user", "content": "no such entry"}], done, 0.0, {"success": False} if done else {}
    def random_action(self, rng):
        return "lookup(" + ", ".join(f"entry_{rng.randrange(9999)}" for _ in range(6)) + ")"
"""


@pytest.mark.slow  # train.py as a subprocess
def test_a_long_prompt_class_stops_before_any_model_naming_every_flag_to_raise(tmp_path):
    """A 1,500-token prompt and long actions at default flags: one message naming both limits, each with a value
    with room, before the tiny model is built (the empty cache stays empty)."""
    path = write(str(tmp_path), "long_env.py", LONG)
    cache = tmp_path / "cache"
    out = run_train("--env", f"{path}:Investigate", "--out", str(tmp_path / "run"), check=False,
                    env={"SEEUPO_CACHE": str(cache)})
    lines = out.stderr.strip().splitlines()
    message = "\n".join(lines[lines.index(next(line for line in lines if line.startswith("error: "))):])
    assert out.returncode == 1 and message.startswith("error: investigate does not fit the limits"), out.stderr
    prompt = int(message.split("the longest first prompt has ")[1].split(" ")[0])
    action = int(message.split("a well-formed action takes up to ")[1].split(" ")[0])
    assert prompt > 1500 and action > 16
    context = int(re.search(r"raise --max_context to (\d+)", message)[1])
    new_tokens = int(re.search(r"raise --max_new_tokens to (\d+)", message)[1])
    assert context >= 1.5 * (prompt + 16) and new_tokens >= 1.5 * action  # with room, not the minimum
    assert not os.path.exists(cache) or not any(p.name.startswith("tiny-") and not p.name.endswith(".lock")
                                                for p in cache.iterdir())


def test_eval_takes_the_same_env_flags_and_a_count_of_tasks_is_eval_tasks(offline_hub):
    import eval as evaluation
    for argv, says in [(["--tasks", "64"], "the number of held-out tasks is --eval_tasks 64"),
                       (["--env", f"{LOOKUP_TRL}:LookupTRL"], "give its tasks with --tasks FILE.jsonl")]:
        with pytest.raises(SystemExit) as e:
            evaluation.main(argv)
        assert str(e.value).startswith("error: ") and says in str(e.value) and "\n" not in str(e.value)


# ----------------------------------------------------------------------------- hostile text (test_bfcl_hostile.py's)
def deep(n):
    return "[" * n + "]" * n


RAISED = [  # the texts that raised in BFCL's environment, aimed at the adapter's tools
    call("power", n=5000),  # str() of a 5000-digit result
    '<tool_call>{"name": "bump", "arguments": {"by": ' + "9" * 5000 + '}}</tool_call>',
    '<tool_call>{"name": "echo", "arguments": {"value": %s}}</tool_call>' % deep(500),
    '<tool_call>{"name": "echo", "arguments": {"value": %s}}</tool_call>' % deep(50_000),
    '<tool_call>{"name": %s, "arguments": {}}</tool_call>' % deep(900),
    '<tool_call>{"name": "echo", "arguments": "{\\"value\\": %s}"}</tool_call>' % deep(900),
    "\n".join([call("bump")] * (bfcl_calls.MAX_CALLS + 1)),
    call("echo", value="x" * bfcl_calls.MAX_TEXT),
    call("echo", value="\ud800x\x00"),  # a lone surrogate
    call("echo", value={"a": {"b": [1.5, None, True]}}),
    call("bump", by=None),
    '<tool_call>{"name": "bump", "arguments": {"by": NaN}}</tool_call>',
    '<tool_call>{"name": "bump", "arguments": {"by": Infinity}}</tool_call>',
    call("echo", value=list(range(bfcl_calls.MAX_VALUES - 1))),  # at the limit: runs
    call("echo", value=list(range(bfcl_calls.MAX_VALUES))),  # over it
    call("bump", **{"ｂｙ": 1}), call("bump", **{"by": 1, "class": 2}), call("bump", **{"a-b": 1}),
    "<tool_call>" * 10_000, "</tool_call>" * 10_000 + call("bump"), "<think>" * 10_000 + call("bump"),
    "<think>x</think>" * 5_000 + call("bump"), "<tool_call>" + call("bump"), call("bump") + "<tool_call>",
    "[bump(by=1), _secret(), __import__('os').system('true')]",  # BFCL's python form: a final answer here
]
STRINGS = ["", "ls()", "__import__('os').system('true')", "../../etc/passwd", "<tool_call>", "</tool_call>", "<think>",
           "\ud800", "ｆｏｌｄｅｒ", "\x00", "é", "<|im_end|>", "{'error': 'x'}"]


def value(rng, depth=0):
    kind = rng.randrange(7 if depth < 3 else 3)
    if kind == 0:
        return rng.choice([0, 1, -1, 7, 2**63 - 1, 2**63, 10**30, True, False, None, 10**9, -10**9])
    if kind == 1:
        return rng.choice([0.5, -0.0, 1e308, 5e-324, float("nan"), float("inf")])
    if kind == 2:
        return rng.choice(STRINGS + ["x" * rng.randint(1, 3000)])
    if kind == 3:
        return json.loads(deep(rng.choice([2, bfcl_calls.MAX_DEPTH, bfcl_calls.MAX_DEPTH + 1, 40])))
    if kind == 4:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if kind == 5:
        return {rng.choice(["a", "a-b", "", "class", "ｂ"]): value(rng, depth + 1)}
    return list(range(rng.choice([10, bfcl_calls.MAX_VALUES + 1])))


def hostile(rng):
    """One hostile message: 1-3 calls of offered tools or forbidden names, random arguments, in JSON blocks
    (the arguments sometimes as a JSON string), or one of RAISED."""
    if rng.random() < 0.2:
        return rng.choice(RAISED)
    blocks = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(["bump", "echo", "mode", "fail", "power"] if rng.random() < 0.8 else NEVER)
        arguments = {rng.choice(["by", "value", "kind", "loud", "text", "n", "x", "class", "self"]): value(rng)
                     for _ in range(rng.randint(0, 2))}
        arguments = json.dumps(arguments) if rng.random() < 0.2 else arguments  # as a string, as OpenAI writes it
        blocks.append("<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>")
    return "\n".join(blocks)


def test_hostile_text_never_crashes_hangs_calls_a_private_name_or_carries_state(spy):
    loaded, module = spy
    rng, task = random.Random(0), loaded.train_tasks[0]
    scripts = [[hostile(rng) for _ in range(loaded.factory().max_turns)] for _ in range(12)]
    module.CALLS.clear()
    alone = []
    for script in scripts:  # each hostile episode alone, until it ends (max_turns, or a message without a call)
        env, outcomes = loaded.factory(), []
        env.reset(task)
        for text in script:
            outcomes.append(step(env, text))
            if outcomes[-1][1]:
                break
        assert outcomes[-1][1]
        alone.append(outcomes)
    assert {what for _, what in module.CALLS} == {"reset", "bump"}  # bump ran; nothing unoffered did
    replies = [m["content"] for outcomes in alone for reply, *_ in outcomes for m in reply if m["role"] == "tool"]
    errors = sum(r.startswith("{'error'") for r in replies)
    assert errors > 20 and len(replies) - errors > 5
    for a, b in [(0, 1), (2, 2), (3, 7)]:  # two episodes interleaved step by step, on one task: each as alone
        envs_, got = [loaded.factory(), loaded.factory()], [[], []]
        for env in envs_:
            env.reset(task)
        for k in range(max(len(alone[a]), len(alone[b]))):
            for j, i in enumerate([a, b]):
                if k < len(alone[i]):
                    got[j].append(step(envs_[j], scripts[i][k]))
        assert got == [alone[a], alone[b]]
    target = lookup(tool_seconds=LIMIT)
    for text in RAISED:  # and on lookup_trl: no exception, an answer within the time
        env = target.factory()
        env.reset(target.train_tasks[0])
        step(env, text)


# ----------------------------------------------------------------------------- through train.py and eval.py
COUNTER = os.path.join(ROOT, "tests", "counter_trl.py")
COUNTER_FLAGS = ["--env", f"{COUNTER}:Counter", "--tasks", os.path.join(ROOT, "tests", "counter_trl.jsonl"),
                 "--reward", f"{COUNTER}:reward", "--max_turns", "4"]


@pytest.mark.slow
def test_a_trl_class_written_elsewhere_trains_with_tiny_unchanged_and_eval_scores_it_the_same_way(tmp_path,
                                                                                                  monkeypatch):
    """tests/counter_trl.py (a TRL-style class of its own make: its tasks file, its reward function) trains two steps
    with --model tiny (whose warm-up on it is built once, cached under its digest) through train.py; its private
    methods never run; eval.py on the adapter gives the held-out numbers train.py logged, base and adapter."""
    from support import tiny
    import train
    out, log = str(tmp_path / "run"), tmp_path / "private.log"
    monkeypatch.setenv("COUNTER_TRL_LOG", str(log))  # the build below, train.py and eval.py alike
    env = {"OMP_NUM_THREADS": "1"}  # eval.py: train.py's one thread, its numbers
    args = train.parse_args([*COUNTER_FLAGS, "--seed", "0"])  # the warm-up train.py would build, built here first:
    tiny.build_tiny(0, user_env.resolve_env(args, need_random_action=True))  # two threads, not its one
    ran = run_train(*COUNTER_FLAGS, *SMALL, "--steps", "2", "--eval_every", "0", "--eval_tasks", "3", "--cpu_threads",
                    "1", "--out", out, env=env)
    assert "warming" not in ran.stdout + ran.stderr  # the model built above, found in the cache
    rows = records(out)
    steps = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(r["turns_mean"] > 1 for r in steps) and not log.exists()
    start, end = (r["eval_success_rate"] for r in rows if "eval_success_rate" in r)
    evaluated = subprocess.run([sys.executable, "eval.py", *COUNTER_FLAGS, "--adapter", os.path.join(out, "adapter"),
                                "--eval_tasks", "3", "--samples", "2", "--k", "1", "--json", str(tmp_path / "e.json")],
                               cwd=ROOT, capture_output=True, text=True, env={**os.environ, **env})
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    table = json.load(open(tmp_path / "e.json"))["results"]["Counter"]
    assert (table["base"]["success_rate"], table["adapter"]["success_rate"]) == (start, end) and not log.exists()
    assert "building" not in evaluated.stdout + evaluated.stderr  # the tiny model train.py built, from the cache


# ----------------------------------------------------------------------------- limits and published scripts
CATCH = '''
class Catch:
    """A ball falls nine rows; the episode is won only by moving under it all the way down (TRL's Catch shape)."""
    def reset(self, **kwargs):
        self.moves = 0
    def move(self, direction: str) -> str:
        """Move the paddle.

        Args:
            direction: where to (choices: ["left", "stay", "right"])
        """
        self.moves += 1
        return f"row {self.moves}"
    def get_reward(self) -> float:
        return float(self.moves >= 9)
'''


def test_episodes_cut_by_max_turns_are_counted_each_step_and_said_once(tmp_path):
    """A Catch-like class needs 9 moves, DEFAULT_MAX_TURNS is 8: every episode scores 0 because of the limit,
    and the step's metrics, its line and one warning say so (not a silent zero)."""
    import types

    import torch
    from accelerate import Accelerator

    import train
    from rollout import SamplingArgs, rollout
    from support.tiny import ScriptedPolicy, tiny_tokenizer
    path = write(str(tmp_path), "catch.py", CATCH)
    loaded = user_env.load_env(f"{path}:Catch", tasks=rows_file(str(tmp_path), TRAIN_TEST))
    policy = ScriptedPolicy(tiny_tokenizer(0), lambda e: call("move", direction="stay"))
    episodes = rollout(policy, loaded.factory, loaded.train_tasks, 4, SamplingArgs(max_new_tokens=256,
                                                                                    max_context=8192))
    assert [e.cut for e in episodes] == ["max_turns"] * 4 and all(e.reward == 0 for e in episodes)
    stats = {"turns": {}, "correction_mean": 1.0, "correction_std": 0.0, "kl": 0.0}
    groups = torch.zeros(4, dtype=torch.long)
    record = {"step": 1, **train.step_metrics(episodes, torch.zeros(4), groups, stats, Accelerator(cpu=True), 8,
                                              1.0, 1.0)}
    assert (record["cut_max_turns"], record["cut_max_context"], record["cut_max_new_tokens"]) == (4, 0, 0)
    lines, run = [], types.SimpleNamespace(warned=set())
    bar = types.SimpleNamespace(set_postfix=lambda **kwargs: None, write=lines.append)
    args = train.parse_args([])
    for _ in range(2):
        train.show(bar, args, record, 0.0, episodes[0], policy.tokenizer, run, True)
    assert "cut by --max_turns 4" in lines[0] and "cut by --max_turns 4" in lines[2]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert warnings == ["warning: --max_turns (the environment's own) cut 4 of 4 episodes this step (reward 0): "
                        "raise it"]  # once a run
    own = user_env.load_env(f"{LOOKUP_TRL}:LookupTRL", tasks=LOOKUP_TRL_TASKS, reward=f"{LOOKUP_TRL}:reward")
    env = own.factory()  # a class's own max_turns is its design: its episodes end there, never "cut"
    env.reset(own.train_tasks[0])
    env.step(call("get", locker="A"))
    assert "cut_by_max_turns" not in env.step(call("answer", code=0))[3]


def test_success_at_sets_what_counts_as_success_for_a_trl_class(tmp_path):
    """--success_at (EnvArgs: train.py's evaluations and eval.py resolve the environment through it alike)."""
    import eval as evaluation
    import train
    from support.user_env import EnvArgs, resolve_env
    flags = dict(env=f"{LOOKUP_TRL}:LookupTRL", tasks=LOOKUP_TRL_TASKS, reward=f"{LOOKUP_TRL}:reward")
    for success_at, success in ((0.0, False), (0.5, True)):
        env = resolve_env(EnvArgs(**flags, success_at=success_at)).factory()
        task = lookup().train_tasks[0]
        env.reset(task)
        env.step(call("get", locker=task["row"]["ask"]))  # the asked locker, then a wrong code: reward 0.5
        assert env.step(call("answer", code=task["row"]["codes"][task["row"]["ask"]] + 1))[3]["success"] == success
    assert train.parse_args(["--success_at", "0.5"]).success_at == 0.5
    assert evaluation.EvalArgs(success_at=0.5).success_at == 0.5
    with pytest.raises(SystemExit, match="--success_at is for a TRL-style class"):
        resolve_env(EnvArgs(env="lookup", success_at=0.5))


PUBLISHED = [  # (a published script's shape, what its one line says)
    ("import trl_not_installed_here\nclass E:\n    def reset(self, **kw): pass\n",
     "needs `trl_not_installed_here`, which is not installed"),
    ("def main():\n    class E:\n        def reset(self, **kw): pass\n    return E\n",
     "E is defined inside main(), line 2: move it to the top level"),
    ("class E:\n    def reset(self, **kw): pass\ntrainer = object()\ntrainer.train()\n",
     "runs trainer.train() when imported (line 4): put that under `if __name__ == \"__main__\":`"),
]


@pytest.mark.parametrize("source, says", PUBLISHED)
def test_a_published_script_as_it_is_gets_one_line_saying_what_to_change(tmp_path, source, says):
    path = write(str(tmp_path), "published.py", source)
    with pytest.raises(SystemExit) as e:
        user_env.load_env(f"{path}:E", tasks=rows_file(str(tmp_path), TRAIN_TEST))
    assert says in str(e.value) and "\n" not in str(e.value), e.value


def test_a_package_of_yours_named_like_a_project_module_is_one_line_naming_the_clash(tmp_path):
    """HuggingEnvs' layout: the class's folder has its own `envs/` package; this project's envs.py hides it."""
    os.makedirs(tmp_path / "envs")
    write(str(tmp_path / "envs"), "__init__.py", "")
    write(str(tmp_path / "envs"), "wordle.py", "WORDS = ['crane']\n")
    path = write(str(tmp_path), "wordle_env.py", "from envs.wordle import WORDS\nclass E:\n"
                                                  "    def reset(self, **kw): pass\n")
    with pytest.raises(SystemExit, match="imports its own `envs` package, which this project's envs module hides"):
        user_env.load_env(f"{path}:E", tasks=rows_file(str(tmp_path), TRAIN_TEST))
