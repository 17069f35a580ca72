"""Nothing lost, nothing crashes: a SIGKILL mid-step, a crash while saving, garbled model output, numerical
extremes, typos in flags, and two processes that must reproduce themselves."""

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

import train
from conftest import BAD_FLAGS, SMALL, finish_train, one_step, run_train, start_train
from seeupo import TurnSample, sweep

TIMING = {"rollout_tokens_per_s", "rollout_seconds", "train_seconds", "step_seconds"}


def lines(path):
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in open(path)]


def adapter(out):
    return load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("setting", [["--model", "QWEN_FOLDER"], ["--optimizer_state", "per_turn"], ["--qlora"]],
                         ids=["lora_on_the_real_vocabulary", "adam_per_turn", "qlora"])
def test_a_run_killed_mid_step_resumes_as_if_never_killed(tmp_path, setting, request):
    """With LoRA on a random-init tiny-qwen folder passed as a path (Qwen's tokenizer and template, V = 151,936:
    the plain path, one AdamW), and on tiny with one AdamW per turn and with QLoRA."""
    if "QWEN_FOLDER" in setting:
        setting = ["--model", str(request.getfixturevalue("qwen_folder"))]
    flags = [*SMALL, "--steps", "4", "--save_every", "1", "--eval_every", "2", "--show_every", "1", "--cpu_threads",
             "1", *setting]
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    whole_run = start_train(*flags, "--out", whole, log=tmp_path / "whole.log")  # side by side, one thread each

    proc = start_train(*flags, "--out", killed, log=tmp_path / "killed.log")
    progress = os.path.join(killed, "checkpoint", "progress.json")
    while not (os.path.exists(progress) and json.load(open(progress))["step"] >= 2):
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # step 3 is under way: its rollout or its sweep
    assert proc.wait() == -signal.SIGKILL
    run_train(*flags, "--resume", "--out", killed)
    finish_train(whole_run, tmp_path / "whole.log")

    # the same step counter, metrics, samples, adapter (so the same optimizer state and RNG draws)
    assert lines(os.path.join(killed, "metrics.jsonl")) == lines(os.path.join(whole, "metrics.jsonl"))
    assert lines(os.path.join(killed, "samples.jsonl")) == lines(os.path.join(whole, "samples.jsonl"))
    a, b = adapter(whole), adapter(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_crash_while_saving_never_loses_the_last_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    run_train(*SMALL, "--steps", "1", "--out", out)
    ckpt = os.path.join(out, "checkpoint")
    os.makedirs(ckpt + ".tmp")  # a save that died half-way: ignored
    open(os.path.join(ckpt + ".tmp", "garbage"), "w").write("half")
    os.replace(ckpt, ckpt + ".old")  # and one that died between its two renames: the old one is used
    run_train(*SMALL, "--steps", "2", "--resume", "--out", out)
    assert [r["step"] for r in lines(os.path.join(out, "metrics.jsonl")) if "reward_mean" in r] == [1, 2]
    assert json.load(open(os.path.join(ckpt, "progress.json")))["step"] == 2


@pytest.mark.slow
def test_two_processes_reproduce_themselves_and_share_statistics(tmp_path):
    """The README's launch line for two ranks on a CPU, twice: whole groups per rank, statistics gathered, the
    same numbers both times."""
    outs = [str(tmp_path / f"run{i}") for i in range(2)]
    for out in outs:
        run_train(*SMALL, "--steps", "2", "--out", out, processes=2)
    first, second = (lines(os.path.join(out, "metrics.jsonl")) for out in outs)
    assert first == second
    for step in (r for r in first if "reward_mean" in r):
        assert step["world_size"] == 2 and step["episodes"] == 16
        # batch normalisation over the gathered batch: std exactly 1 (per-rank would give (n-1)/(N-1) != 1)
        assert step["adv_std"] == pytest.approx(1.0, abs=1e-5) or step["zero_adv_group_frac"] == 1.0
        assert sum(t["n"] for t in step["turn_stats"].values()) == round(step["turns_mean"] * step["episodes"])


@pytest.mark.parametrize("argv,message", BAD_FLAGS)
def test_bad_configuration_is_one_line_that_says_what_to_do(argv, message, tmp_path, capsys, offline_hub):
    if "--qlora" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as stop:
        train.main([*argv, "--out", str(tmp_path / "run")])
    code = stop.value.code
    if isinstance(code, str):  # ours: Python prints it as the one line on stderr
        assert message in code and "\n" not in code
    else:  # argparse: its usage, then one line naming the flag
        assert code == 2 and message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run" / "checkpoint")


@pytest.mark.parametrize("argv,message", [(["--algo", "ppo"], "argument --algo: invalid choice: 'ppo'"),  # argparse's
                                          (["--group_size", "1"], "error: --group_size must be >= 2")])  # ours
def test_a_refusal_reaches_the_terminal_as_one_line_without_a_traceback(argv, message, tmp_path):
    result = run_train(*argv, "--out", str(tmp_path / "run"), check=False)
    assert result.returncode != 0 and message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_extreme_log_prob_differences_never_reach_the_weights_as_nan():
    table = torch.nn.Parameter(torch.zeros(2, 3))
    calls = []

    def drifting(samples, reference=False):  # every call far from the last: |log-ratio| ~ 1e4
        calls.append(1)
        logp = table[[0] * len(samples)].log_softmax(-1)[:, :1] + 1e4 * (-1) ** len(calls)
        return logp, torch.ones_like(logp, dtype=torch.bool)

    optimizer = torch.optim.SGD([table], lr=0.1)
    samples = [TurnSample(j, 0, 1, None) for j in range(4)]
    stats = sweep(drifting, optimizer, samples, torch.tensor([3.0, -3.0, 1.0, -1.0]),
                  one_step(kl_coef=0.1, ppo_epochs=2), num_turns=1)
    assert torch.isfinite(table).all()
    assert all(torch.isfinite(torch.tensor(v)).all() for v in stats["turns"][0].values())
    assert 0.8 <= stats["correction_mean"] <= 1.2


class _Table(torch.nn.Module):
    """A two-turn tabular policy; sample.data = (row, action)."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.3, 0.0], [0.2, 0.0, 0.1]]))

    def forward(self, samples, reference=False):
        rows = torch.tensor([s.data[0] for s in samples])
        logp = self.table[rows].log_softmax(-1).gather(1, torch.tensor([[s.data[1]] for s in samples]))
        return logp, torch.ones_like(logp, dtype=torch.bool)


def _batch(episodes, turns):
    """Episodes j (local index) with their turns: turn 0 from row 0, turn 1 from row 1 + j % 2."""
    return [TurnSample(j, t, 1, (0 if t == 0 else 1 + j % 2, (j + t) % 3)) for j in range(episodes) for t in range(turns)]


def _sweep(policy, samples, advantages, reduce_sum):
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    return sweep(policy, optimizer, samples, advantages, one_step(ppo_epochs=2, kl_coef=0.1), num_turns=2,
                 reduce_sum=reduce_sum)


def _rank(rank, port, results):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)

    def reduce_sum(x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    policy = _Table()
    # rank 0: four episodes with two turns; rank 1: two episodes that never reached turn 1
    samples, advantages = (_batch(4, 2), torch.tensor([1.0, -1.0, 0.5, -0.5])) if rank == 0 else \
        (_batch(2, 1), torch.tensor([2.0, -2.0]))
    stats = _sweep(policy, samples, advantages, reduce_sum)
    results[rank] = (policy.table.detach().clone(), stats["turns"][0]["n"], stats["correction_mean"])
    dist.destroy_process_group()


def test_the_gradient_all_reduce_is_exact_even_for_a_rank_without_a_turn():
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank, args=(port, results), nprocs=2)
    # one process, the union of both ranks' samples (rank 1's episodes renumbered 4, 5)
    single = _Table()
    union = _batch(4, 2) + [TurnSample(4 + s.episode, s.turn, s.cost, s.data) for s in _batch(2, 1)]
    stats = _sweep(single, union, torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0]), lambda x: x)
    for rank in (0, 1):
        table, n, correction = results[rank]
        assert torch.allclose(table, single.table.detach(), atol=1e-6)
        assert n == stats["turns"][0]["n"] == 6 and correction == pytest.approx(stats["correction_mean"], abs=1e-6)
