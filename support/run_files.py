"""What train.py reads and writes around its loop: flags and config files in, the run folder out.

  parse_args(Args, argv)  the flags, after those of a YAML or JSON config file (`train.py FILE [flags]` or
                          `--config FILE`, TRL's spelling): typed flags override the file's, argparse
                          checks both alike; an unknown flag names the right one (TRL's names, close
                          matches); rules that span flags end in one line naming the fix
  Run(accelerator, out)   the run folder: which checkpoint to resume (check_resume: with the flags the run
                          was started with, or stop in one line), metrics.jsonl and samples.jsonl (appended;
                          --report_to mirrors the metrics to Accelerate's tracker), the checkpoint (replaced
                          atomically), rewinding the lines a killed run wrote after its last checkpoint

How it connects: train.py holds Args (the whole configuration) and the loop; nothing else imports this
file.
"""

import argparse
import difflib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import asdict, fields

import yaml
from transformers import HfArgumentParser

import seeupo
from support.plots import plot_runs

# the tracker packages that --report_to needs (tensorboard is in requirements.txt)
TRACKERS = {"tensorboard": "tensorboard==2.21.0", "wandb": "wandb", "trackio": "trackio"}
# TRL's names (GRPOConfig, ModelConfig) of flags that have another name here: an unknown flag names ours
TRL_NAMES = {"learning_rate": "lr", "max_steps": "steps", "output_dir": "out",
             "num_generations": "group_size", "beta": "kl_coef", "epsilon": "clip_low",
             "epsilon_high": "clip_high", "num_iterations": "ppo_epochs",
             "max_completion_length": "max_new_tokens", "model_name_or_path": "model",
             "load_in_4bit": "qlora",
             "eval_steps": "eval_every", "save_steps": "save_every", "resume_from_checkpoint": "resume",
             "importance_sampling_level": "loss"}  # TRL's token | sequence: here --loss grpo | gspo
CONFIG_FILES = (".yaml", ".yml", ".json")
# what --resume may change: where and how the run reports and how long it goes on, never what it trains
RESUME_MAY_CHANGE = {"steps", "out", "resume", "cpu_threads", "report_to", "eval_every", "save_every",
                     "show_every", "plot"}
# args.json's record-only key, not a flag (skipped in a config file): the steps the run resumed from
RECORD_ONLY = {"resumed_from"}


def unknown(name, Args):
    """The one line for a flag (or a config file's key) that Args does not have."""
    if name in TRL_NAMES:
        return f"unknown flag --{name}: TRL's name; here it is --{TRL_NAMES[name]}"
    close = difflib.get_close_matches(name, [f.name for f in fields(Args)], n=1)
    return f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close
                                       else " (train.py --help lists them)")


def config_flags(path, Args):
    """A YAML or JSON file of {flag: value} (Args' names, as args.json holds them) as the command-line flags
    that say the same, so that argparse checks its values as it checks typed flags (types, choices, booleans;
    YAML reads 1e-5 as a string, argparse as the float)."""
    try:
        with open(path) as f:
            values = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise SystemExit(f"error: cannot read {path}: {' '.join(str(e).split())}")
    if not isinstance(values, dict | None):
        raise SystemExit(f"error: {path} must hold flag: value pairs")
    flags, names = [], {f.name for f in fields(Args)}
    for key, value in (values or {}).items():
        if key in RECORD_ONLY:
            continue
        if key not in names:
            raise SystemExit(f"error: {path}: {unknown(key, Args)}")
        if value is None:
            raise SystemExit(f"error: {path}: {key} has no value")
        flags.append(f"--{key}={value}")
    return flags


def parse_args(Args, argv=None):
    """The flags, after those of a config file: `train.py FILE [flags]` or `train.py [flags] --config
    FILE`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config.add_argument("--config")
    file, argv = config.parse_known_args(argv)
    if file.config is None and argv and argv[0].endswith(CONFIG_FILES):
        file.config, argv = argv[0], argv[1:]
    flags = config_flags(file.config, Args) if file.config else []
    parser = HfArgumentParser(Args, description="Flags may follow a YAML or JSON file of them (train.py FILE "
                                                "[flags], or --config FILE): the typed flags override the "
                                                "file's values.")
    try:
        args, rest = parser.parse_args_into_dataclasses(flags + argv, return_remaining_strings=True)
    except ValueError as e:  # SweepConfig's checks: a preset or knob that does not exist, a contradiction
        raise SystemExit(f"error: {e}")
    if rest:
        raise SystemExit(f"error: {unknown(rest[0].split('=')[0].lstrip('-'), Args)}"
                         if rest[0].startswith("--")
                         else f"error: unexpected argument {rest[0]!r} (a config file goes first)")
    sweep = args.schedule == "sweep"
    problems = [
        args.group_size < 2 and "--group_size must be >= 2: a lone episode has no group to be relative to",
        args.steps < 1 and "--steps must be >= 1",
        min(args.eval_every, args.save_every, args.show_every, args.cpu_threads) < 0
        and "--eval_every, --save_every, --show_every, --cpu_threads: >= 0",
        args.tasks_per_step < 1 and "--tasks_per_step must be >= 1",
        args.max_new_tokens >= args.max_context and "--max_context must be larger than --max_new_tokens",
        (args.minibatches < 1 or args.ppo_epochs < 1) and "--minibatches and --ppo_epochs must be >= 1",
        not sweep and args.optimizer_state != "shared"
        and "--optimizer_state per_turn belongs to --schedule sweep (all turns at once take one update a "
            "step)",
        sweep and args.baseline_samples != "episode"
        and "--baseline_samples belongs to --schedule all (the baselines --algo gspo, grpo, reinforce)",
        args.plot and not importlib.util.find_spec("matplotlib")
        and "--plot needs: pip install matplotlib==3.11.2",
        args.report_to != "none" and not importlib.util.find_spec(args.report_to)
        and f"--report_to {args.report_to} needs: pip install {TRACKERS[args.report_to]}",
    ]
    for problem in problems:
        if problem:
            raise SystemExit(f"error: {problem}")
    return args


def tracker_values(record, prefix=""):
    """A metrics line as the flat {name: number} that trackers take: turn_stats {"0": {"kl": ..}} ->
    turn_stats/0/kl."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(tracker_values(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and key != "step":  # the step is the x axis
            out[prefix + key] = value
    return out


class Run:
    """The files of --out: metrics.jsonl and samples.jsonl (appended), the checkpoint (replaced
    atomically)."""

    def __init__(self, accelerator, out):
        self.accelerator, self.out = accelerator, out
        self.metrics = os.path.join(out, "metrics.jsonl")
        self.samples = os.path.join(out, "samples.jsonl")
        self.checkpoint = os.path.join(out, "checkpoint")
        self.warned = set()  # what the run has warned about (once each)

    def log(self, record, path=None):
        if self.accelerator.is_main_process:
            with open(path or self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            if path is None:  # a metrics line: its numbers to the --report_to tracker too (none: nothing)
                self.accelerator.log(tracker_values(record), step=record["step"])

    def to_resume(self, args):
        """The checkpoint that --resume continues, or None for a new run (its folder made). A folder that
        holds a run, without --resume, or a resume with changed flags, stops in one line; a changed --steps
        prints a note."""
        checkpoint = self.latest()
        if checkpoint and not args.resume:
            raise SystemExit(f"error: {self.out} already holds a run; pass --resume to continue it, "
                             f"or choose another --out")
        note = check_resume(args) if checkpoint else None
        if self.accelerator.is_main_process and (note or args.resume and not checkpoint):
            print(note or f"no checkpoint in {self.out}: starting from step 0")
        os.makedirs(self.out, exist_ok=True)
        return checkpoint

    def start(self, args, checkpoint):
        """A new run empties its files; a resumed one loads its checkpoint's state (optimizers, lr schedules,
        RNG) and drops what was written after it. Either way args.json records the flags (a resumed run's new
        --steps too: a copy of it starts the run again) and "resumed_from", the checkpoint steps that
        invocations of this run resumed from ([]: never resumed); the trackers start. Returns the step to go
        on from."""
        step = 0
        if checkpoint:
            self.accelerator.load_state(checkpoint)
            step = json.load(open(os.path.join(checkpoint, "progress.json")))["step"]
            self.rewind(step)
        elif self.accelerator.is_main_process:
            open(self.metrics, "w").close()
            open(self.samples, "w").close()
        if self.accelerator.is_main_process:
            path = os.path.join(self.out, "args.json")
            held = json.load(open(path)) if checkpoint and os.path.exists(path) else {}
            resumed = held.get("resumed_from", []) + [step] if checkpoint else []
            with open(path, "w") as f:
                json.dump({**asdict(args), "resume": False, "resumed_from": resumed}, f, indent=1)
        # the run's name in wandb and trackio (project: seeupo)
        name = os.path.basename(os.path.normpath(self.out))
        self.accelerator.init_trackers("seeupo", config=asdict(args), init_kwargs={
            "wandb": {"name": name, "dir": self.out}, "trackio": {"name": name}})
        return step

    def finish(self, policy, held_out, plot):
        """The final adapter (PeftModel.from_pretrained loads it), and the plot if asked; the trackers
        closed."""
        if self.accelerator.is_main_process:
            policy.model.save_pretrained(os.path.join(self.out, "adapter"))
            print(f"held-out success {held_out:.3f}; adapter in {os.path.join(self.out, 'adapter')}")
            if plot:
                print(f"plot: {plot_runs({'': [self.out]}, os.path.join(self.out, 'plot.png'))}")
        self.accelerator.end_training()

    def save(self, policy, state):
        """Write the checkpoint to a new folder, then swap it in with renames: a crash while saving leaves
        the previous checkpoint whole (and latest() also accepts checkpoint.old if it died mid-swap)."""
        acc, tmp, old = self.accelerator, self.checkpoint + ".tmp", self.checkpoint + ".old"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(tmp)  # registered optimizer and progress state, and every rank's RNG state
        if acc.is_main_process:
            policy.model.save_pretrained(os.path.join(tmp, "adapter"))
            with open(os.path.join(tmp, "progress.json"), "w") as f:
                json.dump(state, f)
            if os.path.exists(self.checkpoint):
                os.replace(self.checkpoint, old)
            os.replace(tmp, self.checkpoint)
            shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def latest(self):
        for path in (self.checkpoint, self.checkpoint + ".old"):
            if os.path.exists(os.path.join(path, "progress.json")):
                return path
        return None

    def rewind(self, step):
        """Keep the lines up to the checkpoint's step (drop what a killed run wrote after it)."""
        for path in (self.metrics, self.samples):
            if not self.accelerator.is_main_process or not os.path.exists(path):
                continue
            kept = []
            for line in open(path):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the kill
                if record["step"] <= step:
                    kept.append(json.dumps(record) + "\n")
            with open(path + ".tmp", "w") as f:
                f.writelines(kept)
            os.replace(path + ".tmp", path)


def check_resume(args):
    """--resume continues the run in --out with the flags it was started with: a changed lr, env, algorithm,
    ... would make one run of two settings, so it is refused in one line. --steps may change (at a constant
    lr the result is exactly a run of the new length: a step's draws depend on the seed and step alone).
    Returns a note for a changed --steps under a decaying lr schedule."""
    path = os.path.join(args.out, "args.json")
    held = json.load(open(path)) if os.path.exists(path) else {}
    method = {f.name for f in fields(seeupo.SweepConfig)}  # older runs wrote "" for a knob their --algo set
    held.update(asdict(seeupo.SweepConfig(**{k: v for k, v in held.items() if k in method})) if held else {})
    changed = [k for k, v in asdict(args).items() if held.get(k, v) != v and k not in RESUME_MAY_CHANGE]
    if changed:
        k = changed[0]
        raise SystemExit(f"error: {args.out} was run with --{k} {held[k]} (now {getattr(args, k)}); --resume "
                         f"keeps a run's flags: train.py {path} --resume, or choose another --out")
    if held.get("steps", args.steps) != args.steps and args.lr_scheduler_type != "constant":
        return (f"note: --steps {held['steps']} -> {args.steps}: the {args.lr_scheduler_type} lr schedule is "
                f"laid over the new length from here on "
                f"(at --lr_scheduler_type constant a longer run is exact)")
    return None
