"""bfcl.py (and bfcl_calls.py): BFCL v4 multi-turn as an environment. The ground truth scores 1.0 everywhere and
one call fewer scores 0, with the same verdict as BFCL's own checker, malformed calls get error replies, episodes
never share state, model text cannot run code, and episodes go through the real rollout(). Hostile text:
test_bfcl_hostile.py. Needs the optional bfcl-eval package (skipped without it)."""

import functools
import json
import os
import re
import subprocess
import sys
import time
import uuid

import pytest

from support import bfcl
from support import bfcl_calls
from rollout import SamplingArgs, rollout
from support.tiny import ScriptedPolicy, tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNSOLVABLE = {"multi_turn_miss_func_49"}  # BFCL's ground truth calls a withheld tool (tail) before it is offered


@pytest.fixture(autouse=True)
def needs_bfcl(request):
    if not request.function.__name__.startswith("test_without_the_package"):  # that one simulates its absence
        pytest.importorskip("bfcl_eval", reason="needs: " + bfcl.INSTALL)


def call(name, /, **arguments):
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def play(env, task, policy):
    """One episode with policy(env) -> text; returns its reward, and its last info with the malformed turns."""
    env.reset(task)
    done, malformed = False, 0
    while not done:
        _, done, reward, info = env.step(policy(env))
        malformed += bool(info.get("malformed"))
    return reward, {**info, "malformed": malformed}


def drop_last_call(env):
    """The ground truth without the task's last call."""
    text = env.oracle_action()
    if env.turn == max(i for i, t in enumerate(env.truth) if t) and env.steps == 0:
        return "\n".join(re.findall(r"<tool_call>.*?</tool_call>", text, re.DOTALL)[:-1]) or "Done."
    return text


def as_bfcl(env, fn):
    """fn(name) running BFCL's own eval()-based code on ground-truth literals, inside a Backends' copy of the module
    data (so it leaks nothing into other episodes), its cache entries dropped after."""
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    name = f"test{uuid.uuid4().hex}"
    try:
        with bfcl_calls.Backends(env.entry, env.long_context).active():
            return fn(name)
    finally:
        for key in [key for key in vars(multi_turn_utils) if key.startswith(name)]:
            del vars(multi_turn_utils)[key]


def bfcl_verdict(env):
    """BFCL's multi_turn_checker on the calls that ran in env (their strings, replayed by its eval())."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker
    category = env.entry["id"].rsplit("_", 1)[0]
    return as_bfcl(env, lambda name: multi_turn_checker(env.calls, env.truth, env.entry, category, name))["valid"]


def env_at(category="multi_turn_base", index=0, **kwargs):
    env = bfcl.BfclEnv(category, **kwargs)
    return env, env.reset({"id": "t", "category": category, "index": index})


@pytest.mark.slow  # all 800 tasks, twice
def test_ground_truth_scores_1_and_one_call_fewer_scores_0_on_all_800_tasks():
    start, n = time.time(), 0
    for category in bfcl.CATEGORIES:
        for task in bfcl.BfclEnv(category).tasks("all"):
            n += 1
            env = bfcl.BfclEnv(category)
            reward, info = play(env, task, lambda env: env.oracle_action())
            solvable = task["id"] not in UNSOLVABLE
            assert (reward, info) == (float(solvable), {"success": solvable, "malformed": int(not solvable)}), task
            assert bfcl_verdict(env) == solvable  # BFCL's own checker on the calls that ran agrees
            env = bfcl.BfclEnv(category)
            assert play(env, task, drop_last_call) == (0.0, {"success": False, "malformed": int(not solvable)})
            assert not bfcl_verdict(env)
    seconds = time.time() - start
    print(f"\n{n} tasks x (ground truth + one call fewer), each checked twice (here and by BFCL): {seconds:.1f} s")
    assert n == 800 and seconds < 300  # measured ~13 s; a generous sanity bound


@pytest.mark.slow  # all 800 tasks, twice
def test_the_ground_truth_replay_matches_bfcls_executor_on_all_800_tasks():
    """The reward replays the ground truth with this file's executor (never BFCL's eval()): per user turn, the
    same result strings and the same backend states (BFCL's own comparison) as BFCL's executor."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import _compare_instances
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_utils import execute_multi_turn_func_call
    for category in bfcl.CATEGORIES:
        for task in bfcl.BfclEnv(category).tasks("all"):
            env = bfcl.BfclEnv(category)
            env.reset(task)
            ours = bfcl_calls.Backends(env.entry, env.long_context)

            def compare(name):
                for k, turn in enumerate(env.truth):
                    results, instances = execute_multi_turn_func_call(
                        turn, env.entry["initial_config"], env.entry["involved_classes"], name, env.entry["id"],
                        long_context=env.long_context, is_evaL_run=True)
                    assert [ours.call(*c)[0] for c in env._truth_calls(k)] == results, (task, k)
                    assert all(_compare_instances(ours.instances[c], instances[c])[0] for c in instances), (task, k)
            as_bfcl(env, compare)


def test_dense_reward_is_the_fraction_of_leading_user_turns_that_pass():
    task = bfcl.BfclEnv().tasks("all")[0]
    env = bfcl.BfclEnv(dense_reward=True)
    assert play(env, task, lambda e: e.oracle_action()) == (1.0, {"success": True, "malformed": 0})
    reward, info = play(env, task, drop_last_call)
    last = max(i for i, t in enumerate(env.truth) if t)
    assert not info["success"] and reward == pytest.approx(last / len(env.truth))
    # the first turn wrong: nothing passes
    reward, info = play(env, task, lambda e: "Done.")
    assert (reward, info["success"]) == (0.0, False)


def test_splits_are_by_scenario_index_deterministic_and_disjoint():
    env = bfcl.BfclEnv()
    train, test = env.tasks("train"), env.tasks("test")
    assert (len(train), len(test), len(env.tasks("all"))) == (160, 40, 200)
    assert train == env.tasks("train") and env.tasks("test", n=5) == test[:5]
    assert {t["index"] for t in test} == set(range(0, 200, 5)) and not {t["index"] for t in train} & {t["index"] for t in test}
    assert env.tasks("test", seed=1) != test and sorted(map(str, env.tasks("test", seed=1))) == sorted(map(str, test))
    for category in bfcl.CATEGORIES:  # the same held-out scenarios in every category
        assert {t["index"] for t in bfcl.BfclEnv(category).tasks("test")} == {t["index"] for t in test}
    assert all(json.loads(json.dumps(t)) == t for t in train + test)


def test_tools_are_json_schemas_and_miss_func_offers_withheld_tools_later():
    env, messages = env_at()
    assert messages == [{"role": "user", "content": env.entry["question"][0][0]["content"]}]
    assert len(env.tools) == 32 and all(set(t) == {"type", "function"} and t["type"] == "function" for t in env.tools)
    assert all(set(t["function"]) == {"name", "description", "parameters"} for t in env.tools)
    assert "dict" not in json.dumps([t["function"]["parameters"] for t in env.tools])  # Gorilla types mapped
    assert env.tools[0]["function"]["parameters"]["type"] == "object"

    env, _ = env_at("multi_turn_miss_func")  # 'sort' is withheld until user turn 3
    assert env.missed == {"3": ["sort"]} and "sort" not in [t["function"]["name"] for t in env.tools]
    reply, *_ = env.step(call("sort", file_name="final_report.pdf"))
    assert reply[0]["content"].startswith("Error: 'sort' is not an available tool")
    for _ in range(3):
        reply, done, _, _ = env.step("I cannot sort that yet.")
    assert not done and reply[0]["role"] == "user" and reply[0]["content"].endswith(
        "I have updated some more functions you can choose from. What about now?")
    assert '"name": "sort"' in reply[0]["content"] and "<tools>" in reply[0]["content"]
    reply, *_ = env.step(call("sort", file_name="final_report.pdf"))
    assert reply[0]["role"] == "tool" and not reply[0]["content"].startswith("Error")


def test_calls_in_both_forms_and_results_formatted_as_bfcl():
    env, _ = env_at()
    reply, done, reward, info = env.step(call("cd", folder="document") + "\n" + call("ls"))
    assert [m["role"] for m in reply] == ["tool", "tool"] and not done and info == {}
    assert reply[0]["content"] == '{"current_working_directory": "document"}'  # a dict: json.dumps
    reply, *_ = env.step("[mkdir(dir_name='temp'), cd('temp'), pwd()]")  # BFCL's python form, positional too
    assert [m["content"] for m in reply] == ["None", '{"current_working_directory": "temp"}',
                                              '{"current_working_directory": "/workspace/document/temp"}']
    assert env.calls[0] == [["cd(folder='document')", "ls()"], ["mkdir(dir_name='temp')", "cd('temp')", "pwd()"]]
    reply, _, _, info = env.step(call("cd", directory="x"))  # wrong argument: BFCL's error text, flagged
    assert reply[0]["content"].startswith("Error during execution: ") and info == {"malformed": True}


def test_malformed_calls_get_error_replies_and_use_up_the_turn():
    env, _ = env_at()
    for text in ["<tool_call>\n{not json}\n</tool_call>", "<tool_call>\n[1, 2]\n</tool_call>",
                 '<tool_call>\n{"name": "ls", "arguments": 3}\n</tool_call>', '<tool_call>\n{"name": "ls"',
                 "[ls(a=True]", "[ls, cd]", "[ls(**{'a': True})]", '<tool_call>\n{"name": 7}\n</tool_call>',
                 call("ls", a=float("nan")).replace("NaN", "Infinity")]:
        reply, done, reward, info = env.step(text)
        assert not done and info == {"malformed": True}, text
        assert all(m["role"] == "tool" and m["content"].startswith("Error: ") for m in reply), (text, reply)
    assert env.turn == 0 and env.calls == [[] for _ in env.truth]  # nothing ran
    reply, done, _, info = env.step("The file is moved.")  # plain text: the next user turn, not an error
    assert reply == [{"role": "user", "content": env.entry["question"][1][0]["content"]}] and info == {}


def test_model_text_cannot_run_code_or_touch_files(tmp_path):
    sentinel = tmp_path / "pwned"
    touch = f"__import__('os').system('touch {sentinel}')"
    env, _ = env_at(index=10)  # GorillaFileSystem only
    assert {c for c in env.entry["involved_classes"]} == {"GorillaFileSystem"}
    attacks = [f"[{touch}]", f"[ls(a={touch})]", "[cat(file_name=open('/etc/passwd').read())]",
               f"[eval({touch!r})]", "[ls.__class__()]", "[(lambda: 1)()]",
               call("__import__", name="os"), call("eval", source=touch), call("exec", source=touch),
               call("_load_scenario", scenario={}), call("__init__"), call("post_tweet", content="x"),  # not offered
               call(f"ls(); {touch}; ls"), call("ls", **{f"a={touch},b": 1})]
    for text in attacks:
        reply, done, _, info = env.step(text)
        assert not done and info == {"malformed": True} and reply[0]["content"].startswith("Error: "), text
    # strings that look like code stay strings, in the backend and in the checker's replay of the calls
    for text in [call("echo", content=touch, file_name="a.txt"), call("cat", file_name="/etc/passwd"),
                 call("echo", content="'); " + touch + "; ('", file_name="b.txt"), f"[echo(content={touch!r})]",
                 f"import os; os.system('touch {sentinel}')"]:  # plain text: ends the user turn, nothing runs
        reply, done, _, info = env.step(text)
        assert "root:" not in json.dumps(reply)
    while not done:
        _, done, _, info = env.step("Done.")
    assert not info["success"] and not sentinel.exists()


def test_episodes_never_share_state_and_the_checker_cache_is_dropped():
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    cache = set(vars(multi_turn_utils))
    first, _ = env_at()
    second, _ = env_at()  # the same task, side by side
    first.step(call("cd", folder="document") + call("mkdir", dir_name="made_by_first"))
    assert "made_by_first" in first.step(call("ls"))[0][0]["content"]
    second.step(call("cd", folder="document"))
    assert "made_by_first" not in second.step(call("ls"))[0][0]["content"]
    while not first.step("Done.")[1]:
        pass
    third, _ = env_at()  # after the first one ended (and the checker ran)
    third.step(call("cd", folder="document"))
    assert third.step(call("ls"))[0] == second.step(call("ls"))[0]
    task = bfcl.BfclEnv().tasks("all")[0]
    for _ in range(2):
        assert play(bfcl.BfclEnv(), task, lambda e: e.oracle_action())[0] == 1.0
    assert set(vars(multi_turn_utils)) == cache  # no instance left behind in BFCL's module globals


def test_long_tool_outputs_are_truncated_with_a_marker():
    env, _ = env_at(max_tool_output=10)
    reply, *_ = env.step(call("pwd"))
    content = reply[0]["content"]
    assert content.startswith('{"current_') and re.search(r"\.\.\. \[truncated: \d+ more characters\]$", content)
    env, _ = env_at(max_tool_output=0)  # 0: no limit
    assert "truncated" not in env.step(call("pwd"))[0][0]["content"]


def test_step_cap_and_max_turns_end_the_episode():
    env, _ = env_at()
    for _ in range(20):  # BFCL: at most 20 steps with calls in one user turn
        assert not env.step(call("pwd"))[1]
    reply, done, reward, info = env.step(call("pwd"))
    assert done and (reward, info["success"]) == (0.0, False) and "forced to quit after 20 steps" in reply[0]["content"]
    assert bfcl.BfclEnv().max_turns == bfcl.DEFAULT_MAX_TURNS
    env, _ = env_at(max_turns=3)
    assert not env.step(call("pwd"))[1] and not env.step("Done.")[1]
    reply, done, reward, info = env.step(call("pwd"))
    assert done and not info["success"] and "max_turns 3" in reply[0]["content"]


@pytest.mark.parametrize("category", bfcl.CATEGORIES)
def test_episodes_through_the_real_rollout_with_the_tiny_tokenizer(category):
    tokenizer = tiny_tokenizer(0)
    oracle = ScriptedPolicy(tokenizer, lambda e: e.env.oracle_action())
    tasks = bfcl.BfclEnv(category).tasks("test", n=2)
    if category == "multi_turn_miss_func":
        tasks.append({"id": "miss_func_0", "category": category, "index": 0})  # a withheld tool comes back
    episodes = rollout(oracle, functools.partial(bfcl.BfclEnv, category, max_tool_output=500), tasks, 1,
                       SamplingArgs(max_new_tokens=4000, max_context=200_000))
    for e in episodes:
        assert e.success and e.reward == 1.0 and not e.truncated and not (e.malformed or e.unterminated), e.outcome
        # the ids are the chat template's rendering of the whole conversation, replayed
        env = bfcl.BfclEnv(category, max_tool_output=500)
        messages, done = env.reset(e.task), False
        for start, end in e.turn_spans:
            text = tokenizer.decode(e.token_ids[start : end - 1])
            reply, done, _, _ = env.step(text)
            messages += [{"role": "assistant", "content": text}] + ([] if done else reply)
        rendered = tokenizer.apply_chat_template(messages, tools=env.tools, tokenize=False)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]  # (non-ASCII text is <|unk|> to it)
        assert done and tokenizer.decode(ids) == tokenizer.decode(e.token_ids) + "\n"
        assert rendered.count("<tool_response>") == sum(len(step) for turn in env.calls for step in turn) > 0
        assert len(e.turn_spans) == sum(2 if t else 1 for t in env.truth)


@pytest.mark.parametrize("thinking", [False, True])
def test_episodes_through_the_real_rollout_with_qwens_tokenizer(qwen_folder, thinking):
    """Qwen's real tokenizer and the Qwen3 template (tools in the system turn): <tool_call>, </tool_call>,
    <tool_response> and <think> are ONE token each, every call written is parsed and run, every turn ends
    at <|im_end|>; with thinking on, a turn's <think> block is not an action."""
    from transformers import AutoTokenizer

    from rollout import render_prompt
    tokenizer, chat = AutoTokenizer.from_pretrained(qwen_folder), {"enable_thinking": thinking}
    call, end_call, response, think, im_end = 151657, 151658, 151665, 151667, 151645
    thought = "<think>\nThe user wants this done; I call the tools.\n</think>\n\n" if thinking else ""
    oracle = ScriptedPolicy(tokenizer, lambda e: thought + e.env.oracle_action(), chat)
    category = "multi_turn_miss_func" if thinking else "multi_turn_base"
    tasks = bfcl.BfclEnv(category).tasks("test", n=2)
    episodes = rollout(oracle, functools.partial(bfcl.BfclEnv, category, max_tool_output=500), tasks, 1,
                       SamplingArgs(max_new_tokens=4000, max_context=200_000))
    for e in episodes:
        assert e.success and e.reward == 1.0 and not (e.truncated or e.malformed or e.unterminated), e.outcome
        prompt = render_prompt(tokenizer, bfcl.BfclEnv(category).reset(e.task), e.env.tools, chat)
        assert e.token_ids[: len(prompt)] == prompt and "<tools>" in tokenizer.decode(prompt)
        calls = 0
        for start, end in e.turn_spans:
            ids, text = e.token_ids[start:end], tokenizer.decode(e.token_ids[start : end - 1])
            assert ids[-1] == im_end and im_end not in ids[:-1]
            assert ids.count(call) == ids.count(end_call) == text.count("<tool_call>") == text.count("</tool_call>")
            assert ids.count(think) == (1 if thinking else 0) == text.count("<think>")
            calls += ids.count(call)
        ran = sum(len(step) for turn in e.env.calls for step in turn)
        assert calls == ran > 0 and e.token_ids.count(response) == ran  # each call run, each result one block


def test_without_the_package_a_one_line_error_names_the_install_command():
    code = "import sys; sys.modules['bfcl_eval'] = None; from support.bfcl import BfclEnv; BfclEnv()"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: --env bfcl needs the BFCL package: pip install --no-deps bfcl-eval==2026.3.23 mpmath==1.3.0"]
