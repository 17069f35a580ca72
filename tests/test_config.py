"""The habits users bring from TRL and Accelerate: config files (configs/ and a run's own args.json) with typed
flags overriding them, --report_to through Accelerate's trackers (tensorboard here), and eval.py --json."""

import glob
import json
import os
from dataclasses import asdict, fields, replace

import pytest
import yaml

import eval as evaluation
import seeupo
import train
from support import run_files
from conftest import ROOT, SMALL, finish_train, records, run_train, start_train
from rollout import PolicyArgs

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.y*ml")))
TIMING = {"rollout_tokens_per_s", "rollout_seconds", "train_seconds", "step_seconds"}


def write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_preset_parses(path):
    args = train.parse_args([path, "--plot", "false"])  # workshop.yaml plots: matplotlib is an optional extra
    assert args.out.startswith("runs/")
    assert open(path).read().startswith("# ") and "accelerate launch train.py configs/" in open(path).read()


def test_the_default_preset_is_train_pys_defaults_every_flag_of_them():
    assert {os.path.basename(p) for p in CONFIGS} >= {"default.yaml", "workshop.yaml", "paper_bfcl.yaml"}
    path = os.path.join(ROOT, "configs", "default.yaml")
    assert train.parse_args([path]) == train.Args() == train.parse_args([])
    assert set(yaml.safe_load(open(path))) == {f.name for f in fields(train.Args)}  # a new flag goes there too


def test_typed_flags_override_the_file_wherever_it_is_named(tmp_path):
    config = write(tmp_path / "c.yaml", "lr: 1e-5\ncorrection: false\nsteps: 7\norder: sequential\n")
    expected = replace(train.Args(), lr=1e-5, correction=False, steps=7, order="sequential")
    assert train.parse_args([config]) == expected  # YAML reads 1e-5 as a string: argparse makes it the float
    assert train.parse_args([config, "--steps", "9", "--correction"]) == replace(expected, steps=9, correction=True)
    assert train.parse_args(["--steps", "9", "--config", config]) == replace(expected, steps=9)  # TRL's spelling
    assert train.parse_args([f"--config={config}"]) == expected
    workshop = train.parse_args([os.path.join(ROOT, "configs", "workshop.yaml"), "--plot", "false", "--seed", "3"])
    assert (workshop.steps, workshop.show_every, workshop.plot, workshop.seed) == (20, 10, False, 3)


@pytest.mark.parametrize("algo", ["seeupo", "gspo", "grpo", "reinforce"])
def test_each_algo_is_a_preset_of_schedule_loss_and_baseline_that_explicit_flags_override(algo):
    preset = seeupo.ALGOS[algo]
    spelled_out = [x for knob, value in preset.items() for x in (f"--{knob}", value)]
    assert train.parse_args(["--algo", algo]) == train.parse_args(["--algo", algo, *spelled_out])
    assert asdict(train.parse_args(["--algo", algo])) | {"algo": "seeupo"} == \
        asdict(train.parse_args(["--algo", "seeupo", *spelled_out]))  # the preset's name is all that differs
    other = "grpo" if preset["loss"] != "grpo" else "gspo"
    assert train.parse_args(["--algo", algo, "--loss", other]).loss == other  # an explicit flag wins


@pytest.mark.slow
def test_algo_reinforce_and_its_spelled_out_knobs_train_identically(tmp_path, tiny_default):
    """--algo reinforce IS --schedule all --loss reinforce --baseline loo: the same run, number for number (the
    two side by side at one thread each, the tiny model built first: conftest's tiny_default)."""
    runs = {"preset": ["--algo", "reinforce"],
            "knobs": ["--schedule", "all", "--loss", "reinforce", "--baseline", "loo"]}
    started = {name: start_train(*SMALL, "--steps", "2", "--eval_every", "0", "--cpu_threads", "1", *flags,
                                 "--out", str(tmp_path / name), log=tmp_path / f"{name}.log")
               for name, flags in runs.items()}
    for name, process in started.items():
        finish_train(process, tmp_path / f"{name}.log")
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in records(tmp_path / name)] for name in runs]
    assert strip[0] == strip[1] and any(r.get("adv_std", 0) > 0 for r in strip[0])


def test_a_runs_args_json_loads_back_as_the_same_args(tmp_path):
    args = replace(train.Args(), env="guess", lr=3e-4, correction=False, group_size=4, out="runs/x", resume=True)
    path = tmp_path / "args.json"
    path.write_text(json.dumps(asdict(args), indent=1))  # as train.py writes it
    assert train.parse_args([str(path)]) == args
    assert train.parse_args([str(path), "--out", "runs/y", "--resume", "false"]) == replace(args, out="runs/y",
                                                                                          resume=False)


@pytest.mark.parametrize("text,message", [
    ("lr: 1e-5\nlerning_rate: 3\n", "c.yaml: unknown flag --lerning_rate"),
    ("learning_rate: 1e-5\n", "c.yaml: unknown flag --learning_rate: TRL's name; here it is --lr"),
    ("model:\n", "c.yaml: model has no value"),
    ("- steps\n", "c.yaml must hold flag: value pairs"),
    ("steps: [1\n", "cannot read"),
    ("order: backwards\n", "argument --order: invalid choice: 'backwards'"),  # argparse's own line, as if typed
    ("plot: maybe\n", "argument --plot: Truthy value expected"),
    ("steps: 2.5\n", "argument --steps: invalid int value: '2.5'"),
    ("group_size: 1\n", "--group_size must be >= 2"),  # and parse_args' own checks
])
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, capsys, text, message):
    with pytest.raises(SystemExit) as stop:
        train.parse_args([write(tmp_path / "c.yaml", text)])
    code = stop.value.code
    line = code if isinstance(code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert message in line and "\n" not in line


@pytest.mark.parametrize("argv,message", [
    (["--learning_rate", "1e-5"], "error: unknown flag --learning_rate: TRL's name; here it is --lr"),
    (["--num_generations=4"], "error: unknown flag --num_generations: TRL's name; here it is --group_size"),
    (["--stepz", "3"], "error: unknown flag --stepz; did you mean --steps?"),
    (["--steps", "3", "configs/workshop.yaml"], "unexpected argument 'configs/workshop.yaml' (a config file goes first)"),
])
def test_an_unknown_flag_is_one_line_not_a_traceback(argv, message):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(argv)
    assert stop.value.code == message or message in stop.value.code and "\n" not in stop.value.code


def test_a_missing_tracker_package_is_one_line_naming_the_install(monkeypatch, tmp_path):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    with pytest.raises(SystemExit) as stop:
        train.main(["--report_to", "wandb", "--out", str(tmp_path / "run")])
    assert stop.value.code == "error: --report_to wandb needs: pip install wandb"
    assert not os.path.exists(tmp_path / "run")  # refused before anything was loaded or written


def test_trackers_get_the_metrics_lines_numbers_flat():
    record = {"step": 3, "reward_mean": 0.5, "episodes": 16, "task": "text", "turn_stats": {"0": {"kl": 0.1, "n": 8}}}
    assert run_files.tracker_values(record) == {"reward_mean": 0.5, "episodes": 16, "turn_stats/0/kl": 0.1, "turn_stats/0/n": 8}


def test_eval_json_is_the_printed_table(tmp_path, capsys):
    """A random-init tiny model and its untrained (zero) adapter: both columns, the same numbers."""
    from rollout import load_policy
    from support.tiny import tiny_model, tiny_tokenizer
    model, adapter, out = tmp_path / "model", tmp_path / "adapter", tmp_path / "eval.json"
    tokenizer = tiny_tokenizer(0)
    tiny_model(tokenizer, 0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    load_policy(str(model), seed=0).model.save_pretrained(adapter)
    table = evaluation.main(["--model", str(model), "--adapter", str(adapter), "--eval_tasks", "3", "--samples", "2",
                             "--k", "1", "2", "--max_new_tokens", "8", "--json", str(out)])
    assert json.load(open(out)) == table
    assert table["args"]["eval_tasks"] == 3 and set(table["results"]) == {"lookup"}
    base, tuned = table["results"]["lookup"]["base"], table["results"]["lookup"]["adapter"]
    assert set(base) == {"tasks", "samples", "success_rate", "pass@1", "pass@2"} and base == tuned
    printed = capsys.readouterr().out
    for key in ("success_rate", "pass@1", "pass@2"):
        assert f"{key:36}{base[key]:10.3f}{tuned[key]:10.3f}" in printed


def test_eval_qlora_scores_a_4bit_base_and_the_adapter_of_a_qlora_run(tmp_path, monkeypatch):
    """eval.py --qlora loads the base in 4 bits (NF4) and the adapter a --qlora run saved onto it: both columns."""
    import bitsandbytes
    from rollout import load_policy
    from support.tiny import tiny_model, tiny_tokenizer
    model, adapter = tmp_path / "model", tmp_path / "adapter"
    tokenizer = tiny_tokenizer(0)
    tiny_model(tokenizer, 0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    load_policy(str(model), PolicyArgs(qlora=True), seed=0).model.save_pretrained(adapter)
    loaded = []
    monkeypatch.setattr(evaluation, "load_policy", lambda *a, **k: loaded.append(load_policy(*a, **k)) or loaded[-1])
    table = evaluation.main(["--model", str(model), "--qlora", "--adapter", str(adapter), "--eval_tasks", "3",
                             "--samples", "2", "--k", "1", "--max_new_tokens", "8"])
    layers = [m for m in loaded[0].model.modules() if isinstance(m, bitsandbytes.nn.Linear4bit)]
    assert len(layers) == 7 * 2 and table["args"]["qlora"]  # every projection of both layers, in 4 bits
    assert set(table["results"]["lookup"]) == {"base", "adapter"}


@pytest.mark.slow
def test_a_run_from_a_config_file_reports_to_tensorboard_and_repeats_from_its_args_json(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    config = write(tmp_path / "small.yaml", "".join(f"{k.lstrip('-')}: {v}\n" for k, v in zip(SMALL[::2], SMALL[1::2]))
                   + "steps: 2\neval_every: 1\nreport_to: tensorboard\n")
    first, again = str(tmp_path / "first"), str(tmp_path / "again")
    run_train(config, "--out", first)
    rows = records(first)
    steps = [r for r in rows if "reward_mean" in r]
    events = event_accumulator.EventAccumulator(os.path.join(first, "seeupo"))
    events.Reload()
    for key, lines in (("reward_mean", steps), ("eval_success_rate", [r for r in rows if "eval_success_rate" in r])):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(r["step"], pytest.approx(r[key])) for r in lines], key
    assert [e.step for e in events.Scalars("turn_stats/0/kl")] == [1, 2]

    run_train(os.path.join(first, "args.json"), "--out", again, "--report_to", "none")  # the run, from its folder
    assert json.load(open(os.path.join(again, "args.json"))) == {**json.load(open(os.path.join(first, "args.json"))),
                                                                 "out": again, "report_to": "none"}
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in records(out)] for out in (first, again)]
    assert strip[0] == strip[1] and not os.path.exists(os.path.join(again, "seeupo"))
    held = set(json.load(open(os.path.join(first, "args.json"))))
    assert {f.name for f in fields(train.Args)} | run_files.RECORD_ONLY == held  # the flags, and the resumes record
