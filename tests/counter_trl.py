"""A TRL environment_factory class written without this project in mind (tests/test_user_env.py trains it through
train.py and eval.py unchanged): reach a target by adding 1, 2 or 3 to a counter, then submit.

Unlike examples/lookup_trl.py it keeps state set up in __init__, returns text from reset (TRL appends it to the
prompt), has an argument-less tool, an optional argument, an integer enum, no max_turns of its own (--max_turns),
a reward function that reads a task column, and private methods that no one may call from outside: each writes
to the file named by $COUNTER_TRL_LOG when it runs.
"""

import os


class Counter:
    def __init__(self):
        self.history = []

    def reset(self, target, start=0, **kwargs):
        self.target, self.value, self.submitted = target, start, False
        return f" Start at {start}."

    def add(self, amount: int) -> str:
        """Add to the counter.

        Args:
            amount: How much to add. (choices: [1, 2, 3])
        """
        self.value += amount
        self.history.append(amount)
        return f"now {self.value}"

    def peek(self) -> int:
        """Read the counter."""
        return self.value

    def submit(self, note: str = "") -> str:
        """Submit the counter's value as the answer.

        Args:
            note: Anything to add.
        """
        self.submitted = True
        return "submitted"

    def _reveal(self):
        _log("_reveal")
        return self.target

    def _set(self, value: int) -> str:
        """Set the counter (private: never a tool).

        Args:
            value: The new value.
        """
        _log("_set")
        self.value = value
        return "set"


def _log(name):
    with open(os.environ.get("COUNTER_TRL_LOG", os.devnull), "a") as f:
        f.write(name + "\n")


def reward(completions, environments, target, **kwargs):
    """1 for submitting the target exactly, a little for getting closer; TRL's signature."""
    return [float(env.submitted and env.value == t) + 0.1 * (env.value <= t) for env, t in zip(environments, target)]
