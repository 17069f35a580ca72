"""support/tiny.py's cache as users meet it: one build when several processes need the same model, and an adapter
that always meets the base it was trained on (eval.py --adapter, train.py --resume, the notebook); and its
warm-up's loss, which shares a batch's common opening, against the plain padded one."""

import os
import random
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import eval as evaluation
from conftest import ROOT, SMALL, run_train
from rollout import Actions, Policy, SamplingArgs
from seeupo import ALL_TURNS, TurnSample
from support import tiny

BUILD = textwrap.dedent("""
    import os, sys, time
    from support import tiny
    def build(tmp):
        with open(sys.argv[2], "a") as f:
            f.write("built\\n")
        time.sleep(3)
        os.makedirs(tmp)
        open(os.path.join(tmp, "config.json"), "w").close()
    print(tiny.built_once(sys.argv[1], build))
""")


@pytest.mark.slow  # two subprocesses
def test_two_processes_that_need_one_model_build_it_once(tmp_path):
    path, builds = str(tmp_path / "cache" / "tiny-0123456789-seed0"), str(tmp_path / "builds")
    runs = [subprocess.Popen([sys.executable, "-c", BUILD, path, builds], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [run.communicate(timeout=60)[0] for run in runs]
    assert all(run.returncode == 0 and out.strip().endswith(path) for run, out in zip(runs, outputs)), outputs
    assert open(builds).read() == "built\n"  # once
    assert sum("another process is building tiny-0123456789-seed0; waiting" in out for out in outputs) == 1
    assert sorted(os.listdir(tmp_path / "cache")) == ["tiny-0123456789-seed0", "tiny-0123456789-seed0.lock"]


def fake_adapter(folder, base):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        f.write('{"base_model_name_or_path": "%s"}' % base)
    return str(folder)


def test_an_adapter_from_before_a_recipe_change_meets_its_own_base_or_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEUPO_CACHE", str(tmp_path))
    today = tiny.tiny_path(0)
    old = str(tmp_path / "tiny-0000000000-seed0")  # the base of an adapter trained before envs.py was edited
    adapter = fake_adapter(tmp_path / "adapter", old)
    with pytest.raises(SystemExit, match="which is no longer in the cache, and today's code builds another tiny"):
        tiny.own_base(adapter, today)
    os.makedirs(old)
    open(os.path.join(old, "config.json"), "w").close()
    notes = []
    assert tiny.own_base(adapter, today, log=notes.append) == old and "recipe changed" in notes[0]
    for other in (tiny.tiny_path(1), tiny.tiny_path(0, "0123456789"), "Qwen/Qwen3-0.6B"):  # seed, env, model
        with pytest.raises(SystemExit, match=f"was trained on {old}, and the flags name {other}"):
            tiny.own_base(adapter, other)
    assert tiny.own_base(fake_adapter(tmp_path / "hub", "Qwen/Qwen3-0.6B"), "Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"


@pytest.mark.slow
def test_eval_takes_the_base_an_adapter_was_trained_on(tmp_path, monkeypatch, tiny_default, capsys):
    """train.py --seed 3, then eval.py --adapter as the README writes it: seed 3's base, not --seed's default."""
    monkeypatch.setenv("SEEUPO_CACHE", str(tmp_path / "cache"))
    seed3 = tiny.tiny_path(3)
    shutil.copytree(tiny_default, seed3)  # stands in for seed 3's build (the same files; the name is the point)
    out = tmp_path / "run"
    run_train(*SMALL, "--steps", "1", "--seed", "3", "--out", str(out), env={"SEEUPO_CACHE": str(tmp_path / "cache")})
    adapter = str(out / "adapter")
    assert tiny.trained_with(adapter) == ("tiny", 3)
    evaluation.main(["--adapter", adapter, "--eval_tasks", "2", "--samples", "1", "--show", "5"])
    printed = capsys.readouterr().out
    assert f"base model: {seed3}" in printed and "held-out task 1, adapter" in printed  # --show capped at 2
    with pytest.raises(SystemExit, match=f"was trained on {seed3}, and the flags name .*seed0"):
        evaluation.main(["--adapter", adapter, "--seed", "0", "--eval_tasks", "2", "--samples", "1"])


def test_the_warm_ups_shared_opening_gives_the_padded_batchs_loss_and_gradient():
    """next_token_loss runs a batch's common opening once and the rests in micro-batches on its keys and values:
    the loss and gradient must be those of every whole episode scored in one left-padded batch by Policy."""
    tokenizer = tiny.tiny_tokenizer(0)
    model = tiny.tiny_model(tokenizer, 0)
    rng = random.Random(0)
    policy = Policy(model, tokenizer)
    for episodes in tiny.warmup_batches(tokenizer, tiny.default_draw(rng, 8), 3, SamplingArgs(), rng):
        lengths = [len(e.token_ids) for e in episodes]
        every = [list(range(1, n)) for n in lengths]
        logp, mask = policy.turn_logprobs([TurnSample(j, ALL_TURNS, n, Actions(e.token_ids, n, q, q))
                                           for j, (e, n, q) in enumerate(zip(episodes, lengths, every))])
        model.zero_grad()
        padded = -(logp * mask).sum() / mask.sum()
        padded.backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        shared = tiny.next_token_loss(model, token_budget=3 * (max(lengths) - 20))(episodes)  # 3 or more micro
        shared.backward()
        assert abs(shared.item() - padded.item()) < 1e-5 * padded.item()
        for p, g in zip(model.parameters(), expected):
            assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6 * g.abs().max().item())
