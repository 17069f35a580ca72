"""What the tests share: a small training setting, train.py run as a subprocess (one process, or the README's
two-process launch on a CPU), its metrics, the bad flags it must refuse, and a Hub that is offline.

Tests marked `slow` take from a quarter of a minute to many minutes: they run train.py end to end (and so build
the warmed-up tiny model, about a minute, once), train many times (the tabular problem) or play all 800 BFCL
tasks. The quick loop leaves them out; the README's command, which CI runs, runs everything:

    python -m pytest -q -m "not slow"      # under a minute
    python -m pytest -q tests              # everything
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_step(**knobs):
    """seeupo.SweepConfig with one optimizer step per turn and no KL (the tests' hand-computed setting), then `knobs`."""
    from seeupo import SweepConfig
    return SweepConfig(**{"ppo_epochs": 1, "minibatches": 1, "kl_coef": 0.0, **knobs})


# examples/lookup_trl.py: lookup written the TRL way, and its tasks file (test_user_env.py, test_train.py)
LOOKUP_TRL = os.path.join(ROOT, "examples", "lookup_trl.py")
LOOKUP_TRL_TASKS = os.path.join(ROOT, "examples", "lookup_trl.jsonl")
SMALL = ["--tasks_per_step", "4", "--group_size", "4", "--eval_tasks", "8", "--ppo_epochs", "1", "--minibatches", "2"]

# flags train.py must refuse in one line that says what to do (argparse's own line for an unknown choice),
# before any model is loaded where possible: (argv, what the line says)
BAD_FLAGS = [
    (["--order", "backwards"], "argument --order: invalid choice: 'backwards'"),
    (["--algo", "ppo"], "argument --algo: invalid choice: 'ppo'"),
    (["--env", "appworld"], "unknown --env 'appworld': choose one of lookup, guess, relay, bfcl, or give a class of "
                            "yours as FILE.py:Class or package.module:Class"),
    (["--tasks", "64"], "--tasks names a tasks file, FILE.jsonl (of a TRL-style --env class); the number of held-out "
                        "tasks is --eval_tasks 64"),
    (["--tasks", "t.jsonl"], "--tasks is for a TRL-style class (--env FILE.py:Class); --env lookup has its own tasks"),
    (["--env", f"{ROOT}/examples/lookup_trl.py:LookupTRL"], "is a TRL-style class (reset, no step): give its tasks "
                                                            "with --tasks FILE.jsonl"),
    (["--env", f"{ROOT}/examples/lookup_trl.py:LookupTRL", "--tasks", f"{ROOT}/examples/lookup_trl.jsonl"],
     "no reward for LookupTRL: give --reward FILE.py:function"),
    (["--group_size", "1"], "--group_size must be >= 2"),
    (["--tasks_per_step", "0"], "--tasks_per_step must be >= 1"),
    (["--algo", "grpo", "--order", "random"], "--order and --no_correction belong to --schedule sweep"),
    (["--schedule", "all", "--no_correction"], "--order and --no_correction belong to --schedule sweep"),
    (["--baseline", "median"], "argument --baseline: invalid choice: 'median'"),
    (["--baseline_samples", "turn"], "--baseline_samples belongs to --schedule all"),
    (["--max_context", "16"], "--max_context must be larger than --max_new_tokens"),
    (["--eval_every", "-1"], "--eval_every, --save_every, --show_every, --cpu_threads: >= 0"),
    (["--algo", "gspo", "--optimizer_state", "per_turn"], "--optimizer_state per_turn belongs to --schedule sweep"),
    (["--model", "no-such/model"], "cannot load model 'no-such/model'"),
    (["--max_context", "40"], "the longest first prompt has 40 tokens and a turn up to 16 more: raise --max_context"),
]


def run_train(*args, processes=1, env=None, check=True):
    """`python train.py ARGS` as a subprocess; processes=2: the README's launch line for two ranks on a CPU."""
    launcher = [sys.executable] if processes == 1 else \
        ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes)]
    env = {**os.environ, **({"ACCELERATE_USE_CPU": "1"} if processes > 1 else {}), **(env or {})}
    out = subprocess.run([*launcher, "train.py", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=1200)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def start_train(*args, log):
    """`python train.py ARGS` in the background, its output to the file `log` (a path): runs side by side share the
    cores, and each keeps its own numbers (a run's floats depend on its thread count, not on what else runs)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)


def finish_train(process, log):
    """Wait for a start_train() run; it must succeed."""
    assert process.wait(timeout=1500) == 0, open(log).read()[-3000:]


def records(out_dir):
    """The JSON lines of a run's metrics.jsonl."""
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


@pytest.fixture(scope="session")
def tiny_default():
    """The folder of the warmed-up default tiny model of seed 0 (what train.py's --model tiny loads), built in this
    process at two threads if the cache lacks it (~2.5 min). train.py runs started side by side would build it
    once too (tiny.built_once's lock: the others wait), but at their one thread each: this is faster."""
    from support import tiny
    return tiny.build_tiny(0)


@pytest.fixture(scope="session")
def qwen_folder(tmp_path_factory):
    """A random-init tiny-qwen folder (Qwen's tokenizer, the Qwen3 template, V = 151,936), built once a session
    (about 4 s, 3 of them the tokenizer): the tests of the real-vocabulary path need no warm-up."""
    from support import qwen_offline, tiny
    return qwen_offline.build(tmp_path_factory.mktemp("tiny-qwen"), 0, tiny.TINY_QWEN_CONFIG)


@pytest.fixture
def offline_hub(monkeypatch):
    """No Hub requests: a name that is not a local folder fails at once (the Hub client reads HF_HUB_OFFLINE when
    it is imported, so setting the variable inside a test alone would still retry for ~20 s without a network)."""
    import huggingface_hub.constants
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
