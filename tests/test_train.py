"""train.py end to end: a short run and its files, --resume, two real ranks, and learning. (Bad flags:
test_faults.py.)"""

import json
import os

import pytest

from conftest import LOOKUP_TRL, LOOKUP_TRL_TASKS, SMALL, finish_train, records, run_train, start_train

# measured (bench/results/seeds/lookup_trl_ci, 20 steps with --ppo_epochs 4, one thread, 2026-12-07): gains 0.89,
# 0.87, 0.14, 0.91, 0.93 over seeds 0-4: the bar is below the worst
LOOKUP_TRL_MARGIN = 0.1


@pytest.mark.slow
def test_short_run_writes_metrics_adapter_and_checkpoint_and_resumes(tmp_path, tiny_default):
    out = str(tmp_path / "run")
    run_train("--steps", "2", "--eval_every", "1", "--save_every", "1", "--out", out, *SMALL)
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
    base = load_policy(tiny_default).model.get_base_model()
    PeftModel.from_pretrained(base, os.path.join(out, "adapter"))  # loads with the library's own loader

    again = run_train("--steps", "2", "--out", out, *SMALL, check=False)
    assert again.returncode == 1 and "already holds a run; pass --resume" in again.stderr
    resumed = run_train("--steps", "3", "--eval_every", "0", "--save_every", "0", "--resume", "--out", out, *SMALL)
    assert "note: --steps 2 -> 3: the linear lr schedule" in resumed.stdout  # eval/save_every 0: at the end only
    rows = records(out)
    assert [r["step"] for r in rows if "reward_mean" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_success_rate" in r] == [0, 1, 2, 3]
    held = json.load(open(os.path.join(out, "args.json")))
    assert held["steps"] == 3 and held["resumed_from"] == [2]  # the run's record follows it, and says it resumed
    other = run_train("--steps", "4", "--lr", "0.01", "--resume", "--out", out, *SMALL, check=False)
    assert other.returncode == 1 and f"{out} was run with --lr 0.001 (now 0.01); --resume keeps" in other.stderr


@pytest.mark.slow
def test_the_default_run_learns_with_lora_and_with_qlora_and_lookup_written_the_trl_way(tmp_path, tiny_default):
    """The default run (the tiny model, lookup, 20 steps) must learn on any machine: seed 0, with LoRA and with a
    4-bit base (--qlora), must each rise by >= 0.3 in held-out success. Measured over seeds 0-4 on one thread
    (bench/results/seeds/default_ci and .../qlora_ci, 2026-12-07): rises of 0.87-0.93 with LoRA; with QLoRA 0.91-0.92
    on seeds 0-3 and 0.41 on seed 4 (its turns garbled from step 5, still rising at step 20): the bar is below the
    smallest. Both on seed 0 (0.92 each): one tiny model to build (about a minute of a fresh clone's suite), built
    first (tiny_default).
    Beside them, examples/lookup_trl.py (lookup written the TRL way, docs/environments.md) must learn through
    train.py with --model tiny as lookup does: held-out success at step 20 above the start by LOOKUP_TRL_MARGIN
    (seed 0 here: 0.04 -> 0.93; seeds 1-4 gain 0.14 to 0.93; bench/results/seeds/lookup_trl_ci).
    Three one-thread runs on two cores: each run's numbers are its own whatever shares the cores with it."""
    trl = ["--env", f"{LOOKUP_TRL}:LookupTRL", "--tasks", LOOKUP_TRL_TASKS, "--reward", f"{LOOKUP_TRL}:reward",
           "--ppo_epochs", "4"]  # the default's 2 epochs take lookup_trl less far in 20 steps (docs/environments.md)
    settings = {"seed0": (["--seed", "0"], 0.3), "qlora_seed0": (["--seed", "0", "--qlora"], 0.3),
                "lookup_trl": (trl, LOOKUP_TRL_MARGIN)}
    runs = {name: (str(tmp_path / name), margin, start_train(*flags, "--steps", "20", "--eval_every", "0",
                                                              "--cpu_threads", "1", "--out", str(tmp_path / name),
                                                              log=tmp_path / f"{name}.log"))
            for name, (flags, margin) in settings.items()}
    for name, (out, margin, process) in runs.items():
        finish_train(process, tmp_path / f"{name}.log")
        evals = [r["eval_success_rate"] for r in records(out) if "eval_success_rate" in r]
        assert evals[-1] >= evals[0] + margin, (name, evals)
