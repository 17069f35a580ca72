"""The toy environments: the interface every environment provides, known random and optimal success rates,
disjoint deterministic splits, and malformed actions that get a reply instead of an exception. The tests marked
"every environment" run on each class in envs.ENVS, a new one too (EXERCISES.md, exercise 4)."""

import copy
import json
import math
import random

import pytest

import envs


def play(env_cls, task, policy, rng):
    env = env_cls()
    env.reset(task)
    done = False
    while not done:
        action = env.random_action(rng) if policy == "random" else env.oracle_action()
        _, done, reward, info = env.step(action)
    return reward, info["success"]


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_every_environment_provides_the_interface(name):
    """envs.py's list: a no-argument constructor, name / max_turns / tools, tasks(split, n) as plain JSON with unique
    ids, chat messages from reset(), an outcome reward only at the end, info["success"] on the last step, and an
    end within max_turns policy turns."""
    env_cls = envs.ENVS[name]
    env = env_cls()
    assert env.name == name and env.max_turns >= 1 and (env.tools is None or isinstance(env.tools, list))
    train = env_cls.tasks("train")
    assert len(env_cls.tasks("train", n=20)) == 20 and len({t["id"] for t in train}) == len(train)
    assert json.loads(json.dumps(train[:50])) == train[:50]  # plain JSON
    rng = random.Random(0)
    for task in train[:200]:
        messages = env.reset(task)
        assert messages and all(m["role"] in ("system", "user") and isinstance(m["content"], str) for m in messages)
        for _ in range(env.max_turns):
            reply, done, reward, info = env.step(env.random_action(rng))
            if done:
                break
            assert reply and reply[0]["content"] and reward == 0  # an outcome reward: only at the end
        assert done, "an episode ends within max_turns policy turns"
        assert isinstance(info.get("success"), bool) and isinstance(reward, int | float)


@pytest.mark.parametrize("name", list(envs.ENVS))
@pytest.mark.parametrize("text", ["", "\x00\n", "<|im_end|>", "(((", "x" * 3000, "call(" * 500, "😀"])
def test_every_environment_answers_a_malformed_turn_and_ends_in_time(name, text):
    env = envs.ENVS[name]()
    env.reset(env.tasks("train")[0])
    for _ in range(env.max_turns):
        reply, done, reward, info = env.step(text)
        assert info["malformed"] is True and reply and reply[0]["content"]
        if done:
            break
    assert done and reward == 0 and info["success"] is False


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_every_environment_survives_its_own_calls_with_garbled_arguments(name):
    """The environment's own action, its argument replaced by junk: a reply, never an exception (whether such a
    call is malformed is the environment's to say)."""
    env_cls, rng = envs.ENVS[name], random.Random(0)
    for task in env_cls.tasks("train")[:20]:
        env, done = env_cls(), False
        env.reset(task)
        while not done:  # at every turn of a random episode, a copy of the environment gets each garbled call
            action = env.random_action(rng)
            for junk in ["x", "", "-1", "99999999999999999999", "1.5", "A, B", "None", "\\n"]:
                probe = copy.deepcopy(env)
                reply, ended, _, info = probe.step(action[: action.index("(") + 1] + junk + ")" if "(" in action else junk)
                assert reply and isinstance(reply[0]["content"], str) and (not ended or "success" in info), action
            _, done, _, _ = env.step(action)


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_random_and_optimal_success_rates(name):
    env_cls, rng = envs.ENVS[name], random.Random(0)
    tasks = env_cls.tasks("train")
    n = 20000
    wins = sum(play(env_cls, tasks[i % len(tasks)], "random", rng)[1] for i in range(n))
    p = env_cls.random_success
    assert abs(wins / n - p) < 4 * math.sqrt(p * (1 - p) / n), (wins / n, p)
    for split in ("train", "test"):
        assert all(play(env_cls, t, "oracle", rng) == (1.0, True) for t in env_cls.tasks(split))
    assert env_cls.optimal_success == 1.0
    assert {"lookup": 1 / 16, "guess": 0.19, "relay": 1 / 16}.get(name, p) == pytest.approx(p)  # (a new env: its own claim)


@pytest.mark.parametrize("name", list(envs.ENVS))
def test_splits_are_deterministic_and_disjoint(name):
    env_cls = envs.ENVS[name]
    train, test = env_cls.tasks("train"), env_cls.tasks("test")
    assert train == env_cls.tasks("train") and test == env_cls.tasks("test")
    key = lambda t: str(sorted((k, v) for k, v in t.items() if k != "id"))
    assert not {key(t) for t in train} & {key(t) for t in test}
    assert env_cls.tasks("train", n=5) == train[:5]


def test_lookup_held_out_answers_are_never_trained_answers():
    answer = lambda t: (t["ask"], t["codes"][t["ask"]])
    trained = {answer(t) for t in envs.LookupEnv.tasks("train")}
    assert trained.isdisjoint(answer(t) for t in envs.LookupEnv.tasks("test"))
    assert len(trained) == 12  # of the 16 (locker, code) pairs, 4 are held out


def test_later_turns_need_what_earlier_replies_revealed():
    task = {"id": "t", "codes": {"A": 3, "B": 1, "C": 0, "D": 2}, "ask": "A"}
    env = envs.LookupEnv()
    env.reset(task)
    reply, done, reward, info = env.step("get(A)")
    assert reply[0]["content"] == "A has 3" and not done and reward == 0
    assert env.step("answer(3)")[1:] == (True, 1.0, {"success": True})
    env.reset(task)  # the right code without having opened the locker is a guess, not a success
    env.step("get(B)")
    assert env.step("answer(3)")[1:] == (True, 0.0, {"success": False})
    env.reset(task)  # partial credit: the right locker, the wrong code
    env.step("get(A)")
    assert env.step("answer(1)")[1:] == (True, 0.5, {"success": False})

    env = envs.GuessEnv()
    env.reset({"id": "g", "numbers": [2, 5, 7], "secret": 7})
    assert env.step("guess(5)")[0][0]["content"] == "5: higher"  # echoed, to be copied
    assert env.oracle_action() == "guess(7)"
    assert env.step("guess(7)")[1:] == (True, 1.0, {"success": True})


def test_relay_pays_only_at_the_last_fork_and_its_depth_is_a_flag():
    task = {"id": "r", "forks": [[3, 8, 1], [5, 0, 0], [2, 9, 1], [4, 6, 0]] + [[1, 2, 0]] * 6}
    env = envs.RelayEnv()
    assert env.reset(task)[1]["content"] == "3 or 8? 8 leads on."
    for door, shown in [(8, "8: 5 or 0? 5 leads on."), (5, "5: 2 or 9? 9 leads on."), (9, "9: 4 or 6? 4 leads on.")]:
        assert env.step(f"open({door})") == ([{"role": "user", "content": shown}], False, 0.0, {})
    assert env.step("open(4)")[1:] == (True, 1.0, {"success": True})  # 4 forks: 4 turns, one reward
    env.reset(task)
    env.step("open(8)")
    assert env.step("open(0)")[1:] == (True, 0.0, {"success": False})  # a dead end ends the episode
    env.reset(task)
    assert env.step("open(7)")[1:] == (True, 0.0, {"malformed": True, "success": False})  # not offered
    deep = envs.make_env("relay", max_turns=6)
    rng, tasks = random.Random(1), envs.RelayEnv.tasks("train")
    wins = 0
    for i in range(20000):
        deep.reset(tasks[i % len(tasks)])
        done = False
        while not done:
            _, done, reward, info = deep.step(deep.random_action(rng))
        wins += info["success"]
    assert abs(wins / 20000 - 0.5**6) < 4 * math.sqrt(0.5**6 / 20000)
    with pytest.raises(SystemExit, match="relay has 1 to 10 forks"):
        envs.make_env("relay", max_turns=11)


def test_relay_held_out_starts_are_never_trained_starts():
    start = lambda t: (t["forks"][0][t["forks"][0][2]] + t["forks"][1][t["forks"][1][2]]) % 4
    assert all(start(t) == 0 for t in envs.RelayEnv.tasks("test"))
    assert all(start(t) != 0 for t in envs.RelayEnv.tasks("train"))


@pytest.mark.parametrize("text", ["", "get", "get(Z)", "answer(12)", "get(A) answer(1)", "<|im_end|>",
                                  "answer(x)", "GET(A)", "\x00\n", "get(A" * 500])
def test_lookup_and_guess_say_how_to_call_them_when_a_turn_is_malformed(text):
    env = envs.LookupEnv()
    env.reset(envs.LookupEnv.tasks("train")[0])
    reply, done, reward, info = env.step(text)
    assert info["malformed"] and "get(X)" in reply[0]["content"] and not done and reward == 0
    reply, done, reward, info = env.step(text)  # out of turns: the episode ends, no credit
    assert done and reward == 0 and info == {"malformed": True, "success": False}
    env = envs.GuessEnv()
    env.reset(envs.GuessEnv.tasks("train")[0])
    reply, done, reward, info = env.step(text)
    assert info["malformed"] and "guess(N)" in reply[0]["content"]


def test_episodes_never_share_state():
    task = envs.LookupEnv.tasks("train")[0]
    first, second = envs.make_env("lookup"), envs.make_env("lookup")
    first.reset(task)
    second.reset(task)
    first.step(f"get({task['ask']})")
    assert second.step(f"answer({task['codes'][task['ask']]})")[2] == 0.0  # second never opened the locker


def test_unknown_env_is_a_one_line_error():
    with pytest.raises(SystemExit, match="unknown env .nope.; choose one of lookup, guess, relay"):
        envs.make_env("nope")
