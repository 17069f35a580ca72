"""`lookup` (envs.LookupEnv) written the TRL way: an environment class, a reward function and a tasks file, as for
TRL's `GRPOTrainer(environment_factory=LookupTRL, reward_funcs=reward, train_dataset=...)`. Nothing here imports
this project; support/user_env.py plays it (docs/environments.md):

    python examples/lookup_trl.py                   # writes examples/lookup_trl.jsonl (the tasks)
    accelerate launch train.py --env examples/lookup_trl.py:LookupTRL --tasks examples/lookup_trl.jsonl \\
        --reward examples/lookup_trl.py:reward

The user asks for the code in one of four lockers; get(locker) opens one and tells its code, answer(code) submits.
The reward gives lookup's partial credit: 0.5 for having opened the asked locker, plus 0.5 for the right code
(answered after opening it). As in lookup, where an answer ends the episode, nothing counts after the answer: TRL
ends an episode only when the model writes no call, so a get() after it opens nothing. The codes are 0-3, and
answer's docstring says so (an enum in its schema). Held out, as in envs.LookupEnv: the tasks whose (asked locker,
code) pair is one of 4 of the 16, which no training task has.
"""

import itertools
import json
import os
import random

LOCKERS = ("A", "B", "C", "D")


class LookupTRL:
    max_turns = 2  # policy turns per episode (seeupo reads it; TRL ignores it: max_tool_calling_iterations there)

    def reset(self, codes, ask, **kwargs):
        """A new episode: the task's columns arrive as keyword arguments (`prompt` among the rest)."""
        self.codes, self.ask = codes, ask
        self.opened, self.answered, self.correct = set(), None, False

    def get(self, locker: str) -> str:
        """Open a locker and read the code inside.

        Args:
            locker: The locker to open. (choices: ["A", "B", "C", "D"])

        Returns:
            The locker's code.
        """
        if locker not in self.codes:
            raise ValueError(f"there is no locker {locker}; choose A, B, C or D")
        if self.answered is not None:  # in lookup an answer ends the episode; TRL ends one only without a call
            return "already answered"
        self.opened.add(locker)
        return f"{locker} has {self.codes[locker]}"

    def answer(self, code: int) -> str:
        """Submit the code of the locker the user asked about. Only the first answer counts.

        Args:
            code: The code. (choices: [0, 1, 2, 3])

        Returns:
            Whether it is right.
        """
        if self.answered is not None:
            return "already answered"
        self.answered = code
        self.correct = self.ask in self.opened and code == self.codes[self.ask]
        return "correct" if self.correct else "wrong"


def reward(completions, environments, **kwargs):
    """TRL's reward_func: one reward per completion, read from its episode's environment."""
    return [0.5 * (env.ask in env.opened) + 0.5 * env.correct for env in environments]


def held_out(ask, code):
    """4 of the 16 (asked locker, code) pairs never appear in training (envs.LookupEnv's rule)."""
    return (LOCKERS.index(ask) + code) % 4 == 0


def make_tasks(path):
    """Every task (4 codes for the 4 lockers, and which one is asked: 1024), shuffled, one JSON row each."""
    tasks = [(dict(zip(LOCKERS, codes)), ask) for codes in itertools.product(range(4), repeat=4) for ask in LOCKERS]
    random.Random(0).shuffle(tasks)
    with open(path, "w") as f:
        for codes, ask in tasks:
            row = {"prompt": [{"role": "user", "content": f"Code of {ask}?"}], "codes": codes, "ask": ask,
                   "split": "test" if held_out(ask, codes[ask]) else "train"}
            f.write(json.dumps(row) + "\n")
    return len(tasks)


if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lookup_trl.jsonl")
    print(f"{make_tasks(path)} tasks written to {path}")
