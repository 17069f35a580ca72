"""Training: `accelerate launch train.py` (or plain `python train.py`), SeeUPO by default.

Each step: pick tasks (each process its own whole groups) -> rollout.rollout() plays G episodes per task ->
seeupo.grae_advantages() (batch statistics over all processes) -> seeupo.sweep() updates the LoRA adapter
turn by turn, last turn first -> one metrics line. Held-out evaluation goes through eval.evaluate().

Args is the whole configuration: its sampling flags come from rollout.SamplingArgs (eval.py shares them), and
the flags that become seeupo.SweepConfig take their help from that dataclass, where each is documented.
train_io.py holds what surrounds the loop: flags and config files in, the run folder out, resume checks.

Flags can come from a YAML or JSON file, given first (or as --config FILE, TRL's spelling); flags typed after it
override its values. configs/ holds presets; a run's own args.json is one too:
  accelerate launch train.py configs/workshop.yaml --steps 10
  accelerate launch train.py runs/default/args.json --out runs/again       # the same run again

Everything a run writes is in --out DIR:
  args.json       the run's flags (train.py loads it as above)
  metrics.jsonl   one JSON object per training step (step, reward_mean, success_rate, world_size, entropy, ...)
                  and one per held-out evaluation (step, eval_success_rate, ...): the record of the run;
                  --report_to tensorboard|wandb|trackio also sends these numbers to Accelerate's tracker
                  (tensorboard: DIR/seeupo/; turn_stats flattened to turn_stats/0/kl, ...)
  adapter/        the final LoRA adapter (save_pretrained; PeftModel.from_pretrained loads it)
  checkpoint/     the last checkpoint (adapter, optimizer(s), lr schedule(s), RNG, step), replaced atomically

Several processes on a CPU (other launch lines silently give one, or two lone, processes):
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py
"""

import functools
import json
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import psutil
import torch
import transformers  # (transformers.get_scheduler, not imported by name: that would load bitsandbytes, via peft,
from accelerate import Accelerator  # before rollout.py quiets its start-up warning)
from tqdm import tqdm

import envs
import seeupo
import train_io
from eval import evaluate, plot_runs, summarize, transcript
from rollout import SamplingArgs, check_context, load_policy, rollout, turn_samples
from tiny import build_tiny


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
    algo: Literal[tuple(seeupo.ALGOS)] = arg("seeupo", "seeupo: the per-turn sweep, gspo loss | all turns at once: "
                                                       "gspo (sequence-level clip), grpo (token-level), reinforce")
    loss: Literal["", *seeupo.LOSSES] = arg("", "override the --algo's loss: gspo | grpo | reinforce (--algo seeupo "
                                                "--loss grpo: the token-level sweep)")
    order: Literal[seeupo.ORDERS] = sweep_arg("order", "reverse")
    correction: bool = sweep_arg("correction", True, "--no-correction: off")
    baseline_samples: Literal["episode", "turn"] = arg("episode", "the all-turns baselines (grpo, gspo, reinforce) "
                                                       "train on one sample per episode, or per turn (the authors')")
    steps: int = arg(40, "training steps")
    tasks_per_step: int = arg(16, "tasks per step (split over processes; whole groups stay on one)")
    group_size: int = arg(8, "G: episodes per task; advantages are relative to the group's mean")
    lr: float = arg(1e-3, "AdamW learning rate of the adapter (tiny default; real Qwen + LoRA: ~1e-5)")
    lr_scheduler_type: Literal["linear", "constant"] = arg("linear", "lr schedule over --steps (linear: to 0 at the end)")
    optimizer_state: Literal["shared", "per_turn"] = arg("shared", "the sweep's AdamW moments: one set shared by all "
                                                         "turns, or one per turn index (each turn's update its own)")
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
    qlora: bool = arg(False, "QLoRA: a 4-bit NF4 base via bitsandbytes (CUDA or CPU)")
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


def parse_args(argv=None):
    """Args from the command line (or argv), after a config file's values; see train_io.parse_args."""
    return train_io.parse_args(Args, argv)


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(log_with=None if args.report_to == "none" else args.report_to, project_dir=args.out)
    world, rank = accelerator.num_processes, accelerator.process_index
    if accelerator.device.type == "cpu":  # `accelerate launch` sets OMP_NUM_THREADS=1: half the speed on 2 cores
        torch.set_num_threads(args.cpu_threads or max(1, (psutil.cpu_count(logical=False) or 1) // world))
    check_launch(args, world)
    run = train_io.Run(accelerator, args.out)
    checkpoint = run.to_resume(args)  # None: a new run (a mixed or clobbered one stops here, in one line)
    env_factory = functools.partial(envs.make_env, args.env, **make_env_kwargs(args))  # a fresh one per episode
    env = env_factory()
    train_tasks, test_tasks = env.tasks("train"), env.tasks("test")[: args.eval_tasks]
    sampling = args.sampling()

    with accelerator.main_process_first():  # rank 0 builds the tiny model's cache, the others then read it
        policy = load_policy(build_tiny(args.seed) if args.model == "tiny" else args.model, seed=args.seed,
                             adapter=checkpoint and os.path.join(checkpoint, "adapter"), lora_r=args.lora_r,
                             lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, qlora=args.qlora,
                             bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
                             thinking=args.thinking, temperature=args.temperature, device=accelerator.device)
    check_context(policy, env, train_tasks[0], sampling)
    # one AdamW, or one per turn index: each turn's update with its own moments (the sweep picks turn t's)
    trainable = [p for p in policy.model.parameters() if p.requires_grad]
    optimizers = [torch.optim.AdamW(trainable, lr=args.lr)
                  for _ in range(env.max_turns if args.optimizer_state == "per_turn" else 1)]
    schedulers = [transformers.get_scheduler(args.lr_scheduler_type, o, num_warmup_steps=0,
                                             num_training_steps=args.steps) for o in optimizers]
    accelerator.register_for_checkpointing(*optimizers, *schedulers)
    progress = {"step": 0}
    if checkpoint:
        accelerator.load_state(checkpoint)
        progress = json.load(open(os.path.join(checkpoint, "progress.json")))
    run.start(args, checkpoint, progress)
    name = os.path.basename(os.path.normpath(args.out))  # the run's name in wandb and trackio (project: seeupo)
    accelerator.init_trackers("seeupo", config=asdict(args), init_kwargs={"wandb": {"name": name, "dir": args.out},
                                                                          "trackio": {"name": name}})

    def reduce_sum(x):
        return accelerator.reduce(x, reduction="sum") if world > 1 else x

    def held_out_eval(step):
        counts, _ = evaluate(policy, env_factory, test_tasks[rank::world], args.eval_samples, sampling, args.seed + 1)
        counts = accelerator.gather(torch.tensor(counts, device=accelerator.device)).tolist()
        run.log({"step": step, **{f"eval_{k}": v for k, v in summarize(counts, args.eval_samples).items()}})
        return sum(counts) / (len(counts) * args.eval_samples)

    cfg = sweep_config(args)
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
        samples = turn_samples(episodes, whole_episode=cfg.schedule == "all" and args.baseline_samples == "episode")
        stats = seeupo.sweep(policy.turn_logprobs, optimizers if len(optimizers) > 1 else optimizers[0], samples,
                             advantages, cfg, env.max_turns, step_seed=args.seed * 7919 + step, reduce_sum=reduce_sum)
        for scheduler in schedulers:
            scheduler.step()  # one lr per training step, whatever the number of optimizer steps in the sweep
        record = {"step": step + 1, **step_metrics(episodes, advantages.cpu(), groups, stats, accelerator,
                                                   env.max_turns, t1 - t0, time.time() - t1)}
        run.log(record)
        if args.eval_every and (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            last_eval = held_out_eval(step + 1)
        bar.set_postfix(reward=f"{record['reward_mean']:.2f}", held_out=f"{last_eval:.2f}")
        if accelerator.is_main_process:
            bar.write(f"step {step + 1:4d}  reward {record['reward_mean']:.3f}  success {record['success_rate']:.3f}  "
                      f"zero_adv_groups {record['zero_adv_group_frac']:.2f}  M {record['correction_mean']:.3f}"
                      f"+-{record['correction_std']:.3f}  kl {record['kl']:.4f}  entropy {record['entropy']:.3f}  "
                      f"turns {record['turns_mean']:.2f}  {record['step_seconds']:.1f}s")
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


def sweep_config(args):
    """The flags as the SweepConfig that seeupo.sweep() takes: --algo's schedule and loss (--loss overrides it)."""
    schedule, loss = seeupo.ALGOS[args.algo]
    return seeupo.SweepConfig(schedule=schedule, loss=args.loss or loss, order=args.order, correction=args.correction,
                              clip_low=args.clip_low, clip_high=args.clip_high, correction_clip=args.correction_clip,
                              kl_coef=args.kl_coef, ppo_epochs=args.ppo_epochs, minibatches=args.minibatches,
                              max_grad_norm=args.max_grad_norm, token_budget=args.token_budget)


def check_launch(args, world):
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise SystemExit(f"error: launched as {launched} processes but accelerate sees {world}; on a CPU machine use "
                         f"ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes {launched} train.py")
    if args.tasks_per_step % world:
        raise SystemExit(f"error: --tasks_per_step {args.tasks_per_step} must be a multiple of the {world} processes")


def make_env_kwargs(args):
    """What envs.make_env needs besides the name; training and its evaluations share it."""
    kwargs = {"max_turns": args.max_turns} if args.max_turns else {}
    if args.env == "bfcl":
        kwargs.update(category=args.bfcl_category, dense_reward=args.bfcl_dense, max_tool_output=args.max_tool_output)
    return kwargs


def step_metrics(episodes, advantages, groups, stats, accelerator, max_turns, rollout_s, train_s):
    """One step's metrics over all processes' episodes (gathered), and the sweep's statistics."""
    per_episode = torch.tensor([[e.reward, e.success, e.truncated, e.malformed, e.unterminated, len(e.turn_spans),
                                 sum(end - start for start, end in e.turn_spans)] for e in episodes], dtype=torch.float64)
    # a group whose advantages are all zero carries no signal (all equal rewards: too easy, too hard, truncated)
    zero_groups = torch.tensor([[float((advantages[groups == g] == 0).all()), 1.0] for g in groups.unique()])
    # per turn index: the sum of the sampling distribution's entropy over the sampled tokens, and their count
    entropy = torch.zeros(max_turns, 2, dtype=torch.float64)
    for e in episodes:
        for t, values in enumerate(e.sample_entropy[:max_turns]):
            entropy[t] += torch.tensor([sum(values), len(values)], dtype=torch.float64)
    device = accelerator.device
    per_episode = accelerator.gather(per_episode.to(device)).cpu()
    adv = accelerator.gather(advantages.to(device)).cpu()
    zero_groups, entropy = (accelerator.reduce(x.to(device), reduction="sum").cpu()
                            for x in (zero_groups.sum(0), entropy))
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
        "entropy": (entropy[:, 0].sum() / entropy[:, 1].sum().clamp(min=1)).item(),  # nats per sampled token
        "turn_entropy": {str(t): (s / n).item() for t, (s, n) in enumerate(entropy) if n > 0},
        **{k: stats[k] for k in ("correction_mean", "correction_std", "kl", "approx_kl", "clipfrac",
                                 "optimizer_steps", "skipped_steps", "grad_norm") if k in stats},
        "rollout_tokens_per_s": policy_tokens / max(rollout_s, 1e-9),
        "rollout_seconds": rollout_s, "train_seconds": train_s, "step_seconds": rollout_s + train_s,
        "turn_stats": {str(t): s for t, s in stats["turns"].items()},
    }


if __name__ == "__main__":
    main()
