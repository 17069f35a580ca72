"""Training: `accelerate launch train.py` (or plain `python train.py`), SeeUPO by default.

Each step: pick tasks (each rank its own whole groups) -> rollout.rollout() plays G episodes per task ->
seeupo.grae_advantages() (batch statistics over all ranks) -> seeupo.sweep() updates the LoRA adapter
turn by turn, last turn first -> one metrics line. Held-out evaluation goes through eval.evaluate().

Args is the whole configuration: its sampling flags come from rollout.SamplingArgs (eval.py shares them), and
the flags that become seeupo.SweepConfig take their help from that dataclass, where each is documented.

Flags can come from a YAML or JSON file, given first (or as --config FILE, TRL's spelling); flags typed after it
override its values, and argparse checks both alike. configs/ holds presets; a run's own args.json is one too:
  accelerate launch train.py configs/workshop.yaml --steps 10
  accelerate launch train.py runs/default/args.json --out runs/again       # the same run again

Everything a run writes is in --out DIR:
  args.json       the run's flags (train.py loads it as above)
  metrics.jsonl   one JSON object per training step (step, reward_mean, success_rate, world_size, ...)
                  and one per held-out evaluation (step, eval_success_rate, ...): the record of the run;
                  --report_to tensorboard|wandb|trackio also sends these numbers to Accelerate's tracker
                  (tensorboard: DIR/seeupo/; turn_stats flattened to turn_stats/0/kl, ...)
  adapter/        the final LoRA adapter (save_pretrained; PeftModel.from_pretrained loads it)
  checkpoint/     the last checkpoint (adapter, optimizer, RNG, step), replaced atomically; --resume

Several processes on a CPU (other launch lines silently give one, or two lone, processes):
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py
"""

import argparse
import difflib
import functools
import importlib.util
import json
import os
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import psutil
import torch
import yaml
from accelerate import Accelerator
from tqdm import tqdm
from transformers import HfArgumentParser, get_scheduler

import envs
import seeupo
from eval import evaluate, plot_runs, summarize, transcript
from rollout import SamplingArgs, check_context, load_policy, rollout, turn_samples


def arg(default, help):
    return field(default=default, metadata={"help": help})


def sweep_arg(name, default, note=""):
    """A flag that becomes seeupo.SweepConfig's field `name`: its help is that field's, documented there once."""
    help = next(f.metadata["help"] for f in fields(seeupo.SweepConfig) if f.name == name)
    return arg(default, f"{help} ({note})" if note else help)


@dataclass
class Args(SamplingArgs):  # the sampling flags (--temperature, --max_context, ...) are rollout.SamplingArgs'
    env: Literal[envs.ENV_NAMES] = arg("lookup", "environment (bfcl: see README, needs bfcl-eval)")
    model: str = arg("tiny", "policy: tiny (embedded, offline), a Hub name (Qwen/Qwen3-0.6B) or a local folder")
    algo: Literal[seeupo.ALGOS] = sweep_arg("algo", "seeupo")
    order: Literal[seeupo.ORDERS] = sweep_arg("order", "reverse")
    correction: bool = sweep_arg("correction", True, "--no-correction: off")
    baseline_samples: Literal["episode", "turn"] = arg("episode", "the all-turns baselines (grpo, gspo, reinforce) "
                                                       "train on one sample per episode, or per turn (the authors')")
    steps: int = arg(40, "training steps")
    tasks_per_step: int = arg(16, "tasks per step (split over processes; whole groups stay on one)")
    group_size: int = arg(8, "G: episodes per task; advantages are relative to the group's mean")
    lr: float = arg(1e-3, "AdamW learning rate of the adapter (tiny default; real Qwen + LoRA: ~1e-5)")
    lr_scheduler_type: Literal["linear", "constant"] = arg("linear", "lr schedule over --steps (linear: to 0 at the end)")
    max_turns: int = arg(0, "policy turns per episode (0: the environment's own limit)")
    ppo_epochs: int = sweep_arg("ppo_epochs", 4, "the authors: 1")
    minibatches: int = sweep_arg("minibatches", 4, "the authors: 1")
    clip_low: float = sweep_arg("clip_low", 0.2)
    clip_high: float = sweep_arg("clip_high", 0.2)
    correction_clip: float = sweep_arg("correction_clip", 0.2)
    kl_coef: float = sweep_arg("kl_coef", 0.05, "the authors: 0.002")
    std_norm: bool = arg(False, "divide advantages by their group's std (the authors: off)")
    batch_norm: bool = arg(True, "normalise advantages over the batch (unit std, clipped to +-3)")
    max_grad_norm: float = sweep_arg("max_grad_norm", 1.0)
    token_budget: int = sweep_arg("token_budget", 16384)
    lora_r: int = arg(8, "LoRA rank")
    lora_alpha: int = arg(16, "LoRA alpha")
    lora_dropout: float = arg(0.0, "LoRA dropout")
    qlora: bool = arg(False, "4-bit NF4 base via bitsandbytes (CUDA only)")
    bf16: bool = arg(False, "bfloat16 base weights (GPU)")
    gradient_checkpointing: bool = arg(False, "recompute activations in the backward pass")
    bfcl_category: Literal[envs.BFCL_CATEGORIES] = arg("multi_turn_base", "BFCL v4 category to train on")
    bfcl_dense: bool = arg(False, "BFCL: reward = fraction of leading user turns that pass (eval stays binary)")
    max_tool_output: int = arg(2000, "BFCL: tool outputs longer than this many characters are truncated, marked")
    eval_every: int = arg(10, "held-out evaluation every N steps (and at the start and the end; 0: only those)")
    eval_tasks: int = arg(128, "held-out tasks per evaluation")
    eval_samples: int = arg(2, "episodes per held-out task")
    save_every: int = arg(10, "checkpoint every N steps (and at the end; 0: only there)")
    show_every: int = arg(0, "print one sampled episode every N steps (also to OUT/samples.jsonl); 0: never")
    plot: bool = arg(False, "at the end, plot metrics.jsonl to OUT/plot.png (needs matplotlib)")
    out: str = arg("runs/default", "folder for everything the run writes")
    resume: bool = arg(False, "continue the run in --out from its checkpoint")
    seed: int = arg(0, "seed of everything (the tiny model too)")
    cpu_threads: int = arg(0, "torch threads per process on a CPU (0: physical cores / processes)")
    report_to: Literal["none", "tensorboard", "wandb", "trackio"] = arg(
        "none", "also send metrics.jsonl's numbers to this tracker, through Accelerate's (tensorboard: OUT/seeupo/)")


# the tracker packages that --report_to needs (tensorboard is in requirements.txt)
TRACKERS = {"tensorboard": "tensorboard==2.21.0", "wandb": "wandb", "trackio": "trackio"}
# TRL's names (GRPOConfig, ModelConfig) of flags that have another name here: an unknown flag names ours
TRL_NAMES = {"learning_rate": "lr", "max_steps": "steps", "output_dir": "out", "num_generations": "group_size",
             "beta": "kl_coef", "epsilon": "clip_low", "epsilon_high": "clip_high", "num_iterations": "ppo_epochs",
             "max_completion_length": "max_new_tokens", "model_name_or_path": "model", "load_in_4bit": "qlora",
             "eval_steps": "eval_every", "save_steps": "save_every", "resume_from_checkpoint": "resume"}
CONFIG_FILES = (".yaml", ".yml", ".json")
# what --resume may change: where and how the run reports and how long it goes on, never what it trains
RESUME_MAY_CHANGE = {"steps", "out", "resume", "cpu_threads", "report_to", "eval_every", "save_every", "show_every",
                     "plot"}


def unknown(name):
    """The one line for a flag (or a config file's key) that Args does not have."""
    if name in TRL_NAMES:
        return f"unknown flag --{name}: TRL's name; here it is --{TRL_NAMES[name]}"
    close = difflib.get_close_matches(name, [f.name for f in fields(Args)], n=1)
    return f"unknown flag --{name}" + (f"; did you mean --{close[0]}?" if close else " (train.py --help lists them)")


def config_flags(path):
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
        if key not in names:
            raise SystemExit(f"error: {path}: {unknown(key)}")
        if value is None:
            raise SystemExit(f"error: {path}: {key} has no value")
        flags.append(f"--{key}={value}")
    return flags


def parse_args(argv=None):
    """The flags, after those of a config file: `train.py FILE [flags]` or `train.py [flags] --config FILE`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config.add_argument("--config")
    file, argv = config.parse_known_args(argv)
    if file.config is None and argv and argv[0].endswith(CONFIG_FILES):
        file.config, argv = argv[0], argv[1:]
    flags = config_flags(file.config) if file.config else []
    parser = HfArgumentParser(Args, description="Flags may follow a YAML or JSON file of them (train.py FILE [flags], "
                                                "or --config FILE): the typed flags override the file's values.")
    args, rest = parser.parse_args_into_dataclasses(flags + argv, return_remaining_strings=True)
    if rest:
        raise SystemExit(f"error: {unknown(rest[0].split('=')[0].lstrip('-'))}" if rest[0].startswith("--")
                         else f"error: unexpected argument {rest[0]!r} (a config file goes first)")
    problems = [
        args.group_size < 2 and "--group_size must be >= 2: a lone episode has no group to be relative to",
        args.steps < 1 and "--steps must be >= 1",
        min(args.eval_every, args.save_every, args.show_every, args.cpu_threads) < 0
        and "--eval_every, --save_every, --show_every, --cpu_threads: >= 0",
        args.tasks_per_step < 1 and "--tasks_per_step must be >= 1",
        args.max_new_tokens >= args.max_context and "--max_context must be larger than --max_new_tokens",
        (args.minibatches < 1 or args.ppo_epochs < 1) and "--minibatches and --ppo_epochs must be >= 1",
        args.algo != "seeupo" and (args.order != "reverse" or not args.correction)
        and "--order and --no-correction belong to --algo seeupo",
        args.algo == "seeupo" and args.baseline_samples != "episode"
        and "--baseline_samples belongs to the baselines (--algo grpo, gspo or reinforce)",
        args.plot and not importlib.util.find_spec("matplotlib") and "--plot needs: pip install matplotlib==3.11.2",
        args.report_to != "none" and not importlib.util.find_spec(args.report_to)
        and f"--report_to {args.report_to} needs: pip install {TRACKERS[args.report_to]}",
    ]
    for problem in problems:
        if problem:
            raise SystemExit(f"error: {problem}")
    return args


class Run:
    """The files of --out: metrics.jsonl and samples.jsonl (appended), the checkpoint (replaced atomically)."""

    def __init__(self, accelerator, out):
        self.accelerator, self.out = accelerator, out
        self.metrics = os.path.join(out, "metrics.jsonl")
        self.samples = os.path.join(out, "samples.jsonl")
        self.checkpoint = os.path.join(out, "checkpoint")

    def log(self, record, path=None):
        if self.accelerator.is_main_process:
            with open(path or self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
            if path is None:  # a metrics line: its numbers to the --report_to tracker too (none: nothing)
                self.accelerator.log(numbers(record), step=record["step"])

    def save(self, policy, state):
        """Write the checkpoint to a new folder, then swap it in with renames: a crash while saving leaves
        the previous checkpoint whole (and resume() also accepts checkpoint.old if it died mid-swap)."""
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
    """--resume continues the run in --out with the flags it was started with: a changed lr, env, algorithm, ...
    would make one run of two settings, so it is refused in one line. --steps may change (at a constant lr the
    result is exactly a run of the new length: a step's draws depend on the seed and step alone). Returns a note
    for a changed --steps under a decaying lr schedule."""
    path = os.path.join(args.out, "args.json")
    held = json.load(open(path)) if os.path.exists(path) else {}
    changed = [k for k, v in asdict(args).items() if held.get(k, v) != v and k not in RESUME_MAY_CHANGE]
    if changed:
        k = changed[0]
        raise SystemExit(f"error: {args.out} was run with --{k} {held[k]} (now {getattr(args, k)}); --resume keeps "
                         f"a run's flags: train.py {path} --resume, or choose another --out")
    if held.get("steps", args.steps) != args.steps and args.lr_scheduler_type != "constant":
        return (f"note: --steps {held['steps']} -> {args.steps}: the {args.lr_scheduler_type} lr schedule is laid "
                f"over the new length from here on (at --lr_scheduler_type constant a longer run is exact)")
    return None


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(log_with=None if args.report_to == "none" else args.report_to, project_dir=args.out)
    world, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.device.type == "cpu":  # `accelerate launch` sets OMP_NUM_THREADS=1: half the speed on 2 cores
        torch.set_num_threads(args.cpu_threads or max(1, (psutil.cpu_count(logical=False) or 1) // world))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise SystemExit(f"error: launched as {launched} processes but accelerate sees {world}; on a CPU machine use "
                         f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {launched} train.py")
    if args.tasks_per_step % world:
        raise SystemExit(f"error: --tasks_per_step {args.tasks_per_step} must be a multiple of the {world} processes")
    run = Run(accelerator, args.out)
    checkpoint = run.latest()
    if checkpoint and not args.resume:
        raise SystemExit(f"error: {args.out} already holds a run; pass --resume to continue it, or choose another --out")
    if args.resume and not checkpoint and accelerator.is_main_process:
        print(f"no checkpoint in {args.out}: starting from step 0")
    note = check_resume(args) if checkpoint else None
    if note and accelerator.is_main_process:
        print(note)
    os.makedirs(args.out, exist_ok=True)
    env_factory = functools.partial(envs.make_env, args.env, **make_env_kwargs(args))  # a fresh one per episode
    env = env_factory()
    train_tasks, test_tasks = env.tasks("train"), env.tasks("test")[: args.eval_tasks]
    sampling = args.sampling()

    with accelerator.main_process_first():  # rank 0 builds the tiny model's cache, the others then read it
        policy = load_policy(args.model, seed=args.seed, adapter=checkpoint and os.path.join(checkpoint, "adapter"),
                             lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                             qlora=args.qlora, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
                             thinking=args.thinking, device=accelerator.device)
    check_context(policy, env, train_tasks[0], sampling)
    policy.temperature = args.temperature or 1.0  # log-probs of the policy that samples (greedy: the raw one)
    optimizer = torch.optim.AdamW([p for p in policy.model.parameters() if p.requires_grad], lr=args.lr)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=0, num_training_steps=args.steps)
    accelerator.register_for_checkpointing(optimizer, scheduler)
    progress = {"step": 0}
    if checkpoint:
        accelerator.load_state(checkpoint)
        progress = json.load(open(os.path.join(checkpoint, "progress.json")))
        run.rewind(progress["step"])
    elif accelerator.is_main_process:
        open(run.metrics, "w").close()
        open(run.samples, "w").close()
    if accelerator.is_main_process:  # a resumed run records its new --steps (and the other flags it may change)
        with open(os.path.join(args.out, "args.json"), "w") as f:
            json.dump(asdict(replace(args, resume=False)), f, indent=1)  # a copy of it starts the run again
    name = os.path.basename(os.path.normpath(args.out))  # the run's name in wandb and trackio (project: seeupo)
    accelerator.init_trackers("seeupo", config=asdict(args), init_kwargs={"wandb": {"name": name, "dir": args.out},
                                                                          "trackio": {"name": name}})

    def reduce_sum(x):
        return accelerator.reduce(x, reduction="sum") if world > 1 else x

    def held_out_eval(step):
        mine = test_tasks[rank::world]
        counts, _ = evaluate(policy, env_factory, mine, args.eval_samples, sampling, args.seed + 1)
        counts = accelerator.gather(torch.tensor(counts, device=accelerator.device)).tolist()
        record = {"step": step, **{f"eval_{k}": v for k, v in summarize(counts, args.eval_samples).items()}}
        run.log(record)
        return record["eval_success_rate"]

    cfg = seeupo.SweepConfig(algo=args.algo, order=args.order, correction=args.correction, clip_low=args.clip_low,
                             clip_high=args.clip_high, correction_clip=args.correction_clip, kl_coef=args.kl_coef,
                             ppo_epochs=args.ppo_epochs, minibatches=args.minibatches,
                             max_grad_norm=args.max_grad_norm, token_budget=args.token_budget)
    start = progress["step"]
    last_eval = held_out_eval(0) if start == 0 else float("nan")
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"{args.algo} {args.env}",
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    for step in bar:
        t0 = time.time()
        torch.manual_seed(args.seed * 1_000_003 + step * 1009 + rank)  # resumable: a step's draws depend on it alone
        tasks = random.Random(f"{args.seed}-{step}").sample(train_tasks, min(args.tasks_per_step, len(train_tasks)))
        episodes = rollout(policy, env_factory, tasks[rank::world], args.group_size, sampling)
        t1 = time.time()
        rewards = torch.tensor([e.reward for e in episodes])
        groups = torch.tensor([e.group for e in episodes])
        advantages = seeupo.grae_advantages(rewards, groups, args.std_norm, args.batch_norm, reduce_sum=reduce_sum,
                                            leave_one_out=args.algo == "reinforce").to(accelerator.device)
        samples = turn_samples(episodes, whole_episode=args.algo != "seeupo" and args.baseline_samples == "episode")
        stats = seeupo.sweep(policy.turn_logprobs, optimizer, samples, advantages, cfg, env.max_turns,
                             step_seed=args.seed * 7919 + step, reduce_sum=reduce_sum)
        scheduler.step()  # one lr per training step, whatever the number of optimizer steps in the sweep
        t2 = time.time()
        record = step_metrics(episodes, advantages.cpu(), groups, stats, accelerator, t1 - t0, t2 - t1)
        record["step"] = step + 1
        run.log(record)
        if args.eval_every and (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            last_eval = held_out_eval(step + 1)
        bar.set_postfix(reward=f"{record['reward_mean']:.2f}", success=f"{record['success_rate']:.2f}",
                        held_out=f"{last_eval:.2f}")
        bar.write(f"step {step + 1:4d}  reward {record['reward_mean']:.3f}  success {record['success_rate']:.3f}  "
                  f"adv_std {record['adv_std']:.2f}  zero_adv_groups {record['zero_adv_group_frac']:.2f}  "
                  f"M {record['correction_mean']:.3f}+-{record['correction_std']:.3f}  kl {record['kl']:.4f}  "
                  f"turns {record['turns_mean']:.2f}  tok/s {record['rollout_tokens_per_s']:.0f}  "
                  f"{record['step_seconds']:.1f}s") if accelerator.is_main_process else None
        if args.show_every and (step + 1) % args.show_every == 0:  # rank 0's first episode, as trained on
            text = transcript(episodes[0], policy.tokenizer)
            bar.write(f"--- step {step + 1}: a sampled episode (>>> policy tokens <<< carry the loss) ---\n{text}")
            run.log({"step": step + 1, "task": episodes[0].task, "reward": episodes[0].reward,
                     "success": episodes[0].success, "transcript": text}, run.samples)
        if args.save_every and (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            run.save(policy, {"step": step + 1})
    if accelerator.is_main_process:
        policy.model.save_pretrained(os.path.join(args.out, "adapter"))
        print(f"held-out success {last_eval:.3f}; adapter in {os.path.join(args.out, 'adapter')}")
        if args.plot:
            print(f"plot: {plot_runs({'': [args.out]}, os.path.join(args.out, 'plot.png'))}")
    accelerator.end_training()  # closes the trackers


def make_env_kwargs(args):
    """What envs.make_env needs besides the name; training and its evaluations share it."""
    kwargs = {"max_turns": args.max_turns} if args.max_turns else {}
    if args.env == "bfcl":
        kwargs.update(category=args.bfcl_category, dense_reward=args.bfcl_dense, max_tool_output=args.max_tool_output)
    return kwargs


def numbers(record, prefix=""):
    """A metrics line as the flat {name: number} that trackers take: turn_stats {"0": {"kl": ..}} -> turn_stats/0/kl."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and key != "step":  # the step is the x axis
            out[prefix + key] = value
    return out


def step_metrics(episodes, advantages, groups, stats, accelerator, rollout_s, train_s):
    """One step's metrics over all ranks' episodes (gathered), and the sweep's statistics."""
    per_episode = torch.tensor([[e.reward, e.success, e.truncated, e.malformed, e.unterminated, len(e.turn_spans),
                                 sum(end - start for start, end in e.turn_spans)] for e in episodes], dtype=torch.float64)
    # a group whose advantages are all zero carries no signal (all equal rewards: too easy, too hard, truncated)
    zero_groups = torch.tensor([[float((advantages[groups == g] == 0).all()), 1.0] for g in groups.unique()])
    device = accelerator.device
    per_episode = accelerator.gather(per_episode.to(device)).cpu()
    adv = accelerator.gather(advantages.to(device)).cpu()
    zero_groups = accelerator.reduce(zero_groups.sum(0).to(device), reduction="sum").cpu()
    policy_tokens = per_episode[:, 6].sum().item()
    return {
        "reward_mean": per_episode[:, 0].mean().item(),
        "success_rate": per_episode[:, 1].mean().item(),
        "world_size": accelerator.num_processes,
        "episodes": len(per_episode),
        "truncated_frac": per_episode[:, 2].mean().item(),
        "malformed_turns": int(per_episode[:, 3].sum()),
        "unterminated_turns": int(per_episode[:, 4].sum()),
        "turns_mean": per_episode[:, 5].mean().item(),
        "adv_mean": adv.mean().item(), "adv_std": adv.std().item(), "adv_min": adv.min().item(), "adv_max": adv.max().item(),
        "zero_adv_group_frac": (zero_groups[0] / zero_groups[1]).item(),
        "correction_mean": stats["correction_mean"], "correction_std": stats["correction_std"],
        "kl": stats["kl"],
        "optimizer_steps": stats["optimizer_steps"], "skipped_steps": stats["skipped_steps"],
        "grad_norm": stats["grad_norm"],
        "rollout_tokens_per_s": policy_tokens / max(rollout_s, 1e-9),
        "rollout_seconds": rollout_s, "train_seconds": train_s, "step_seconds": rollout_s + train_s,
        "turn_stats": {str(t): s for t, s in stats["turns"].items()},
    }


if __name__ == "__main__":
    main()
