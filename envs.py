"""Environments: the small interface every environment implements, and three procedural toy environments.

An environment object plays ONE episode (fresh state each time, so episodes never share state):

    env = make_env("lookup")
    messages = env.reset(task)                    # the first chat messages: [system, user]
    reply, done, reward, info = env.step(text)    # text: the policy's turn, as decoded text

What an environment class must provide (tests/test_envs.py checks each of these for every class in ENVS):
  Env()                 a constructor that needs no argument (rollout() calls the class as its factory)
  Env.tasks(split, n=None)   a static method: the first n (default: all) tasks of "train" or "test", plain
                        JSON-serialisable dicts with a unique "id", deterministic, the two splits disjoint
  name, max_turns, tools     its name; the most policy turns of an episode; JSON schemas for the chat
                        template's `tools=`, or None
  reset(task) -> messages    the first chat messages
  step(text) -> (reply, done, reward, info)   `reply` is a list of chat messages that rollout.py appends
                        through the chat template; `reward` is the outcome reward, given when `done`;
                        info["success"] (a bool) on the step that ends the episode; a turn it cannot parse is
                        not an error: an informative reply, the turn used up, info["malformed"] = True;
                        the episode ends by max_turns policy turns at the latest (info["cut_by_max_turns"] =
                        True where it fails only because they ran out: each step counts such episodes)
  random_action(rng), oracle_action(), random_success, optimal_success   for the tiny model's warm-up and the
                        tests: a well-formed action with random arguments, the optimal action, and the
                        success rates of those two policies
rollout.rollout() makes one per episode with a factory, `functools.partial(make_env, name, **kwargs)` (an
environment class with its defaults is one too).

The toy environments need what earlier replies revealed in later turns, so credit has to flow across
turns, and each knows its random-policy and optimal success rates (asserted in tests/test_envs.py):

- `lookup` (tool-use shaped): the user asks for the code in one of four lockers; turn 1 `get(X)` opens
  locker X and the environment replies with its code; turn 2 `answer(N)` submits. Optimal: get(asked),
  then answer(code): two copies, the second from a reply. The reward gives partial credit: 0.5 for having
  opened the asked locker whatever turn 2 does, plus 0.5 for success, so turn 1 pays on its own and more
  through turn 2 (success, the held-out measure, needs both).
- `guess` (higher/lower): a secret, one of three listed digits; `guess(N)` gets "higher", "lower" or
  "correct". Optimal: binary search -- the middle one, then the side the reply names -- always within
  the 2 turns; turn 1's middle guess only pays through turn 2. A guess is echoed: "5: higher".
- `relay` (the long horizon): a path of forks, 4 by default (`max_turns`, up to 10); each message offers two
  doors and names the one that leads on, `open(N)` opens one. Only the last fork pays, so every turn pays
  only through all the turns after it. Random: 1/2 per fork (1/16 at depth 4); optimal: 1.
"""

import itertools
import random
import re

CALL = re.compile(r"^\s*([a-z]+)\(([^()]*)\)\s*$")  # a whole turn that is exactly one call: name(arg)


def without_thinking(text):
    """A turn as an environment reads it: without its <think>...</think> blocks (a thinking model's reasoning
    is not its action; the transcript and the loss keep it). One linear scan; an unclosed <think> stays."""
    kept, at = [], 0
    while (i := text.find("<think>", at)) >= 0 and (j := text.find("</think>", i + 7)) >= 0:
        kept.append(text[at:i])
        at = j + len("</think>")
    return "".join(kept) + text[at:]


def user_message(text):
    """An environment's reply: one user message (a list, as step() returns replies)."""
    return [{"role": "user", "content": text}]


def drawn_tasks(name, draw, split, n=None, seed=0):
    """Tasks drawn one by one from a generator seeded by (name, seed), each kept in the split its held-out
    rule names, until the split has n (train 2000, test 200): draw(rng) -> (task fields, held_out)."""
    rng, out = random.Random(f"{name}-{seed}"), []
    while len(out) < (n or {"train": 2000, "test": 200}[split]):
        fields, held_out = draw(rng)
        if held_out == (split == "test"):
            out.append({"id": f"{name}-{split}-{len(out)}", **fields})
    return out


class LookupEnv:
    """Lockers A-D hold codes 0-3; the user asks for one. Turn 1: get(X) opens locker X and the
    environment replies with its code; turn 2: answer(N). Success: the asked code, after opening it."""

    name = "lookup"
    tools = None  # the actions are described in the system prompt: short enough for the tiny model
    lockers = ("A", "B", "C", "D")
    codes = 4  # codes are 0..3
    system = "Find the code: get(X) opens locker X, answer(N) submits code N."

    def __init__(self, max_turns=2):
        self.max_turns = max_turns

    @staticmethod
    def tasks(split, n=None, seed=0):
        """Held-out = tasks whose (asked locker, code) pair never is the answer of a training task."""
        def draw(rng):
            codes = {k: rng.randrange(LookupEnv.codes) for k in LookupEnv.lockers}
            ask = rng.choice(LookupEnv.lockers)
            # 4 of the 16 (locker, code) pairs
            held_out = (LookupEnv.lockers.index(ask) + codes[ask]) % 4 == 0
            return {"codes": codes, "ask": ask}, held_out
        return drawn_tasks("lookup", draw, split, n, seed)

    def reset(self, task):
        self.task, self.turn, self.opened = task, 0, set()
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": f"Code of {task['ask']}?"}]

    def step(self, text):
        self.turn += 1
        call = CALL.match(without_thinking(text))
        name, arg = call.groups() if call else (None, None)
        ask, answered, info = self.task["ask"], None, {}
        if name == "get" and arg in self.lockers:
            self.opened.add(arg)
            reply = f"{arg} has {self.task['codes'][arg]}"
        elif name == "answer" and arg in ("0", "1", "2", "3"):
            answered = int(arg)
            reply = "correct" if ask in self.opened and answered == self.task["codes"][ask] else "wrong"
        else:
            reply, info = "bad call; use get(X), then answer(N)", {"malformed": True}
        done = answered is not None or self.turn >= self.max_turns
        if not done:
            return user_message(reply), False, 0.0, info
        # outcome reward with partial credit: half for having opened the asked locker, half for success
        win = reply == "correct"
        return user_message(reply), True, 0.5 * (ask in self.opened) + 0.5 * win, {**info, "success": win}

    def random_action(self, rng):
        """A well-formed action of the protocol with a uniformly random argument (the tiny model's
        warm-up)."""
        return (f"get({rng.choice(self.lockers)})" if self.turn == 0
                else f"answer({rng.randrange(self.codes)})")

    def oracle_action(self):
        """The optimal policy (it peeks at the task): open the asked locker, then answer its code."""
        return f"answer({self.task['codes'][self.task['ask']]})" if self.turn else f"get({self.task['ask']})"

    # random_action opens the asked locker with prob 1/4, then answers right with prob 1/4
    random_success = 1 / 16
    optimal_success = 1.0


class GuessEnv:
    """Higher or lower: I picked one of three listed numbers; guess(N) gets higher, lower or correct."""

    name = "guess"
    tools = None
    system = "Find my number: guess(N) says higher, lower or correct."

    def __init__(self, max_turns=2):
        self.max_turns = max_turns

    @staticmethod
    def tasks(split, n=None, seed=0):
        """Every (three distinct digits, which one is secret): 360 tasks; a fixed fifth is held out."""
        every = [(c, s) for c in itertools.combinations(range(10), 3) for s in c]
        random.Random(f"guess-{seed}").shuffle(every)
        chosen = every[: len(every) // 5] if split == "test" else every[len(every) // 5 :]
        return [{"id": f"guess-{split}-{i}", "numbers": list(c), "secret": s}
                for i, (c, s) in enumerate(chosen[:n] if n else chosen)]

    def reset(self, task):
        self.task, self.turn = task, 0
        self.left = list(task["numbers"])  # what the replies so far leave open
        return [{"role": "system", "content": self.system},
                {"role": "user", "content": "One of " + " ".join(map(str, task["numbers"])) + "."}]

    def step(self, text):
        self.turn += 1
        call = CALL.match(without_thinking(text))
        if not call or call.group(1) != "guess" or not call.group(2).isdigit() or len(call.group(2)) != 1:
            reply, info = "bad call; use guess(N)", {"malformed": True}
        else:
            n, secret, info = int(call.group(2)), self.task["secret"], {}
            reply = "correct" if n == secret else "higher" if n < secret else "lower"
            self.left = [x for x in self.left if (x > n if n < secret else x < n)]
        done = reply == "correct" or self.turn >= self.max_turns
        if not done:  # a well-formed guess is echoed ("5: higher"), so the next turn can copy it
            return user_message(reply if info else f"{n}: {reply}"), False, 0.0, info
        return user_message(reply), True, float(reply == "correct"), {**info, "success": reply == "correct"}

    def random_action(self, rng):
        """A well-formed guess of a uniformly random digit (the tiny model's warm-up)."""
        return f"guess({rng.randrange(10)})"

    def oracle_action(self):
        """Binary search: the middle of what is left."""
        return f"guess({self.left[len(self.left) // 2]})"

    # random_action ignores the replies: each guess hits with prob 1/10, independently (2 turns)
    random_success = 1 - 0.9**2
    optimal_success = 1.0


class RelayEnv:
    """A path of forks: each message offers two doors and names the one that leads on; open(N) opens a door.
    The next fork is only shown once this one is passed, so every turn pays only through the turns after it.
    Reward 1 for passing all `max_turns` forks (4 by default), else 0; a wrong door or a malformed call ends
    the episode (there are exactly as many turns as forks)."""

    name = "relay"
    tools = None
    system = "Pass every fork: each message offers two doors and says which leads on; open(N) opens door N."
    most_forks = 10  # every task holds this many forks; an episode plays the first max_turns

    def __init__(self, max_turns=4):
        if not 1 <= max_turns <= self.most_forks:
            raise SystemExit(f"error: relay has 1 to {self.most_forks} forks (--max_turns)")
        self.max_turns = max_turns

    @staticmethod
    def tasks(split, n=None, seed=0):
        """Held-out = tasks whose first two right doors sum to a multiple of 4, which no training task has."""
        def draw(rng):
            forks = [[*rng.sample(range(10), 2), rng.randrange(2)] for _ in range(RelayEnv.most_forks)]
            return {"forks": forks}, (forks[0][forks[0][2]] + forks[1][forks[1][2]]) % 4 == 0
        return drawn_tasks("relay", draw, split, n, seed)

    def _fork(self):
        a, b, right = self.task["forks"][self.passed]
        return f"{a} or {b}? {(a, b)[right]} leads on."

    def reset(self, task):
        self.task, self.passed = task, 0
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self._fork()}]

    def step(self, text):
        a, b, right = self.task["forks"][self.passed]
        call = CALL.match(without_thinking(text))
        if not call or call.group(1) != "open" or call.group(2) not in (str(a), str(b)):
            return (user_message("bad call; use open(N) with a door offered"), True, 0.0,
                    {"malformed": True, "success": False})
        door = int(call.group(2))
        if door != (a, b)[right]:
            return user_message(f"{door}: dead end"), True, 0.0, {"success": False}
        self.passed += 1
        if self.passed == self.max_turns:
            return user_message(f"{door}: out"), True, 1.0, {"success": True}
        return user_message(f"{door}: {self._fork()}"), False, 0.0, {}

    def random_action(self, rng):
        """One of the two doors offered now, uniformly (the tiny model's warm-up)."""
        return f"open({rng.choice(self.task['forks'][self.passed][:2])})"

    def oracle_action(self):
        """The door the message names."""
        a, b, right = self.task["forks"][self.passed]
        return f"open({(a, b)[right]})"

    # random_action passes each fork with probability 1/2
    random_success = 0.5**4
    optimal_success = 1.0


# the toy environments (the tiny model warms up on these)
ENVS = {"lookup": LookupEnv, "guess": GuessEnv, "relay": RelayEnv}


def make_env(name, **kwargs):
    """A fresh toy environment for one episode (--env bfcl and classes of yours:
    support/user_env.resolve_env)."""
    if name not in ENVS:
        raise SystemExit(f"error: unknown env '{name}'; choose one of {', '.join(ENVS)}")
    return ENVS[name](**kwargs)
