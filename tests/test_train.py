"""train.py end to end: bad flags, a short run and its files, --resume, two real ranks, and learning."""

import json
import os
import subprocess
import sys

import pytest

import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--tasks_per_step", "4", "--group_size", "4", "--eval_tasks", "8", "--ppo_epochs", "1", "--minibatches", "2"]


def run(*args, env=None, check=True):
    out = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, timeout=1200)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


def records(out_dir):
    return [json.loads(line) for line in open(os.path.join(out_dir, "metrics.jsonl"))]


@pytest.mark.parametrize("argv,message", [
    (["--group_size", "1"], "--group_size must be >= 2"),
    (["--algo", "grpo", "--order", "random"], "--order and --no-correction belong to --algo seeupo"),
    (["--max_context", "16"], "--max_context must be larger than --max_new_tokens"),
    (["--eval_every", "-1"], "--eval_every, --save_every, --show_every, --cpu_threads: >= 0"),
])
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(SystemExit, match=message):
        train.parse_args(argv)


def test_unknown_choices_are_rejected_by_the_parser():
    out = run("--algo", "ppo", check=False)
    assert out.returncode == 2 and "invalid choice: 'ppo'" in out.stderr and "Traceback" not in out.stderr
    out = run("--env", "appworld", check=False)
    assert out.returncode == 2 and "--env" in out.stderr and "Traceback" not in out.stderr


def test_a_context_smaller_than_the_first_prompt_fails_before_training(tmp_path):
    with pytest.raises(SystemExit, match="the first prompt has .* tokens.*raise --max_context"):
        train.main(["--max_context", "40", "--out", str(tmp_path / "run")])


def test_short_run_writes_metrics_adapter_and_checkpoint_and_resumes(tmp_path):
    out = str(tmp_path / "run")
    run("--steps", "2", "--eval_every", "1", "--save_every", "1", "--out", out, *SMALL)
    rows = records(out)
    steps = [r for r in rows if "reward_mean" in r]
    evals = [r for r in rows if "eval_success_rate" in r]
    assert [r["step"] for r in steps] == [1, 2] and [r["step"] for r in evals] == [0, 1, 2]
    for key in ("reward_mean", "success_rate", "world_size", "adv_std", "correction_mean", "correction_std", "kl",
                "rollout_tokens_per_s", "zero_adv_group_frac", "malformed_turns", "turn_stats"):
        assert key in steps[0], key
    assert steps[0]["world_size"] == 1 and steps[0]["episodes"] == 16
    assert set(steps[0]["turn_stats"]) == {"0", "1"}  # lookup: two turns, each updated on its own

    from peft import PeftModel
    from rollout import load_policy
    base = load_policy("tiny").model.get_base_model()
    PeftModel.from_pretrained(base, os.path.join(out, "adapter"))  # loads with the library's own loader

    again = run("--steps", "2", "--out", out, *SMALL, check=False)
    assert again.returncode == 1 and "already holds a run; pass --resume" in again.stderr
    run("--steps", "3", "--eval_every", "0", "--save_every", "0", "--resume", "--out", out, *SMALL)  # 0: at the end
    rows = records(out)
    assert [r["step"] for r in rows if "reward_mean" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_success_rate" in r] == [0, 1, 2, 3]


def test_two_processes_are_two_ranks_sharing_batch_statistics(tmp_path):
    """The launch line from the README: two ranks on a CPU, whole groups per rank, statistics gathered."""
    out = str(tmp_path / "run")
    cmd = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "train.py", "--steps", "1",
           "--out", out, *SMALL]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    step = [r for r in records(out) if "reward_mean" in r]
    assert len(step) == 1 and step[0]["world_size"] == 2
    assert step[0]["episodes"] == 4 * 4  # both ranks' 2 groups of 4 episodes entered the statistics


def test_the_default_run_learns(tmp_path):
    """With the default flags (the tiny model, lookup), held-out success must rise by RL. Measured here:
    0.05 at the start, 0.43 after 30 steps and 0.65 after 40 (2-core CPU, ~8 s a step)."""
    out = str(tmp_path / "run")
    run("--steps", "30", "--eval_every", "30", "--out", out)
    evals = [r["eval_success_rate"] for r in records(out) if "eval_success_rate" in r]
    assert evals[0] < 0.12 and evals[-1] > evals[0] + 0.2, evals
