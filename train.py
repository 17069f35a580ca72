"""Training: `accelerate launch train.py` (or plain `python train.py`), SeeUPO by default.

Each step: pick tasks (each process its own whole groups) -> rollout.rollout() plays G episodes per task ->
seeupo.grae_advantages() (batch statistics over all processes) -> seeupo.sweep() updates the LoRA adapter
turn by turn, last turn first -> one metrics line. Held-out evaluation goes through eval.evaluate().

The environment: a built-in one (--env lookup, guess, relay, bfcl) or a class of yours (--env
my_env.py:MyEnv, a TRL environment_factory class with --tasks and --reward too): support/user_env.resolve_env
gives both as one LoadedEnv (docs/environments.md). The model: a folder or Hub name, or tiny / tiny-qwen,
which support/tiny.py builds once (minutes, with a progress bar; docs/performance.md) and caches.

Args is the whole configuration. It inherits the method's knobs from seeupo.SweepConfig (--algo is a preset
of --schedule, --loss and --baseline), and the policy's and sampling's flags from rollout.PolicyArgs and
rollout.SamplingArgs (eval.py shares those): each flag's default and help are written once, where it is
used. support/run_files.py holds what surrounds the loop: flags and config files in, the run folder and
metrics out, resume.

Flags can come from a YAML or JSON file, given first (or as --config FILE, TRL's spelling); flags typed after
it override its values. configs/ holds presets; a run's own args.json is one too:
  accelerate launch train.py configs/workshop.yaml --steps 10
  accelerate launch train.py runs/default/args.json --out runs/again       # the same run again

Everything a run writes is in --out DIR:
  args.json       the run's flags (train.py loads it as above)
  metrics.jsonl   one JSON object per training step (step, reward_mean, success_rate, world_size, entropy,
                  ...) and one per held-out evaluation (step, eval_success_rate, ...): the record of the run;
                  --report_to tensorboard|wandb|trackio also sends these numbers to Accelerate's tracker
                  (tensorboard: DIR/seeupo/; turn_stats flattened to turn_stats/0/kl, ...)
  adapter/        the final LoRA adapter (save_pretrained; PeftModel.from_pretrained loads it)
  checkpoint/     the last checkpoint (adapter, optimizer(s), lr schedule(s), RNG, step), replaced atomically

Several processes on a CPU (other launch lines silently give one, or two lone, processes):
  ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 train.py
"""

import os
import random
import time
from dataclasses import dataclass
from typing import Literal

import psutil
import torch
# transformers.get_scheduler, not imported by name: that would load bitsandbytes, via peft, before
# load_policy() quiets its start-up warning
import transformers
from accelerate import Accelerator
from tqdm import tqdm

import seeupo
from eval import evaluate, summarize, transcript
from rollout import PolicyArgs, SamplingArgs, load_policy, rollout, turn_samples
from seeupo import knob
from support import run_files, tiny
from support.limits import check_limits
from support.sweep_tools import LogprobCache
from support.user_env import EnvArgs, resolve_env


# its own flags + the method's, sampling's, policy's and env's
@dataclass
class Args(seeupo.SweepConfig, SamplingArgs, PolicyArgs, EnvArgs):
    model: str = knob("tiny", "policy: tiny or tiny-qwen (embedded, offline), a Hub name (Qwen/Qwen3-0.6B) "
                              "or a folder")
    baseline_samples: Literal["episode", "turn"] = knob("episode", "--schedule all trains on one sample per "
                                                       "episode, or one per turn (the authors' baselines)")
    steps: int = knob(20, "training steps")
    tasks_per_step: int = knob(16, "tasks per step (split over processes; whole groups stay on one)")
    group_size: int = knob(8, "G: episodes per task; advantages are relative to the group's mean")
    lr: float = knob(1e-3, "AdamW learning rate of the adapter (tiny default; real Qwen + LoRA: ~1e-5)")
    lr_scheduler_type: Literal["linear", "constant"] = knob("linear", "lr schedule over --steps (linear: "
                                                                      "to 0 at the end)")
    optimizer_state: Literal["shared", "per_turn"] = knob("shared", "the sweep's AdamW moments: one set "
                                                         "shared by all turns, or one per turn index (each "
                                                         "turn's update its own)")
    eval_every: int = knob(10, "held-out evaluation every N steps (and at the start and the end; 0: only "
                               "those)")
    eval_tasks: int = knob(128, "held-out tasks per evaluation")
    eval_samples: int = knob(2, "episodes per held-out task")
    save_every: int = knob(10, "checkpoint every N steps (and at the end; 0: only there)")
    show_every: int = knob(0, "print one sampled episode every N steps (also to OUT/samples.jsonl); 0: never")
    plot: bool = knob(False, "at the end, plot metrics.jsonl to OUT/plot.png (needs matplotlib)")
    out: str = knob("runs/default", "folder for everything the run writes")
    resume: bool = knob(False, "continue the run in --out from its checkpoint")
    seed: int = knob(0, "seed of everything (the tiny model too)")
    cpu_threads: int = knob(0, "torch threads per process on a CPU (0: physical cores / processes)")
    report_to: Literal["none", "tensorboard", "wandb", "trackio"] = knob(
        "none", "also send metrics.jsonl's numbers to this tracker, through Accelerate's (tensorboard: "
                "OUT/seeupo/)")


def parse_args(argv=None):
    """Args from the command line (or argv), after a config file's values; see
    support/run_files.parse_args."""
    return run_files.parse_args(Args, argv)


def main(argv=None):
    args = parse_args(argv)  # Args is a seeupo.SweepConfig: sweep() reads the method's knobs from it
    accelerator = Accelerator(log_with=None if args.report_to == "none" else args.report_to,
                              project_dir=args.out)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    set_up_processes(args, accelerator)
    run = run_files.Run(accelerator, args.out)
    checkpoint = run.to_resume(args)  # None: a new run (a mixed or clobbered one stops here, in one line)
    loaded = resolve_env(args, need_random_action=args.model == "tiny")  # built-in or yours, checked
    check_limits(args, loaded)  # prompts, actions, episodes vs the flags: before any model (seconds)
    env_factory, env = loaded.factory, loaded.factory()  # the factory: a fresh environment per episode
    train_tasks, test_tasks = loaded.train_tasks, loaded.test_tasks[: args.eval_tasks]
    adapter = checkpoint and os.path.join(checkpoint, "adapter")
    with accelerator.main_process_first():  # rank 0 builds an embedded model's cache, the others read it
        wanted = tiny.folder(args.model, args.seed, loaded) if args.model in tiny.EMBEDDED else args.model
        base = tiny.own_base(adapter, wanted) if adapter else wanted  # a resumed adapter meets its own base
        if base == wanted and args.model in tiny.EMBEDDED:
            tiny.build(args.model, args.seed, loaded)  # once (minutes, with a progress bar), then cached
        policy = load_policy(base, args, seed=args.seed, device=device, adapter=adapter)
    # One AdamW, or one per turn; no accelerator.prepare(): sweep() sums gradients itself (sweep_tools.py)
    trainable = [p for p in policy.model.parameters() if p.requires_grad]
    optimizers = [torch.optim.AdamW(trainable, lr=args.lr)
                  for _ in range(env.max_turns if args.optimizer_state == "per_turn" else 1)]
    schedulers = [transformers.get_scheduler(args.lr_scheduler_type, o, num_warmup_steps=0,
                                             num_training_steps=args.steps) for o in optimizers]
    accelerator.register_for_checkpointing(*optimizers, *schedulers)
    # the step to go on from (a checkpoint's optimizer, lr and RNG loaded)
    start = run.start(args, checkpoint)

    def reduce_sum(x):
        return accelerator.reduce(x, reduction="sum") if world > 1 else x

    def held_out(step):  # success on held-out tasks, each process playing its share
        counts, _ = evaluate(policy, env_factory, test_tasks[rank::world], args.eval_samples, args, args.seed)
        counts = accelerator.gather(torch.tensor(counts, device=device)).tolist()
        run.log({"step": step, **{f"eval_{k}": v for k, v in summarize(counts, args.eval_samples).items()}})
        return sum(counts) / (len(counts) * args.eval_samples)

    last_eval = held_out(0) if start == 0 else float("nan")
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc=f"{args.algo} {args.env}",
               disable=not accelerator.is_main_process, dynamic_ncols=True)
    for step in bar:
        torch_seed, tasks_seed, sweep_seed = step_seeds(args.seed, step, rank)
        # a step's draws depend on the seed and the step alone: --resume is exact
        torch.manual_seed(torch_seed)
        tasks = random.Random(tasks_seed).sample(train_tasks, min(args.tasks_per_step, len(train_tasks)))
        t0 = time.time()
        # G episodes per task
        episodes = rollout(policy, env_factory, tasks[rank::world], args.group_size, args)
        t1 = time.time()
        rewards, groups = (torch.tensor([e.reward for e in episodes]),
                           torch.tensor([e.group for e in episodes]))
        advantages = seeupo.grae_advantages(rewards, groups, args.std_norm, args.batch_norm,
                                            reduce_sum=reduce_sum, leave_one_out=args.baseline == "loo")
        samples = turn_samples(episodes,
                               whole_episode=args.schedule == "all" and args.baseline_samples == "episode")
        stats = seeupo.sweep(LogprobCache(policy), optimizers, samples, advantages.to(device), args,
                             env.max_turns, sweep_seed, reduce_sum)
        for scheduler in schedulers:
            scheduler.step()  # one lr per training step, whatever the number of optimizer steps in the sweep
        record = {"step": step + 1, **step_metrics(episodes, advantages, groups, stats, accelerator,
                                                   env.max_turns, t1 - t0, time.time() - t1)}
        run.log(record)
        if args.eval_every and (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            last_eval = held_out(step + 1)
        show(bar, args, record, last_eval, episodes[0], policy.tokenizer, run, accelerator.is_main_process)
        if args.save_every and (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            run.save(policy, {"step": step + 1})
    run.finish(policy, last_eval, args.plot)  # the adapter, the plot; the trackers closed


CUT_BY = ("max_turns", "max_context", "max_new_tokens")  # the limits that can end an episode (Episode.cut)


def step_seeds(seed, step, rank):
    """A step's seeds, from the run's seed and the step alone: torch's generator (sampling; each process its
    own), the tasks' draw and the sweep's (its random order and minibatch splits; both the same on every
    process)."""
    return seed * 1_000_003 + step * 1009 + rank, f"{seed}-{step}", seed * 7919 + step


def show(bar, args, record, last_eval, episode, tokenizer, run, main_process):
    """The progress bar's numbers, a line per step, and every --show_every steps one sampled episode (rank
    0's first, as trained on: the policy's tokens, the only ones that carry loss, between >>> and <<<)."""
    bar.set_postfix(reward=f"{record['reward_mean']:.2f}", held_out=f"{last_eval:.2f}")
    cut = {limit: record[f"cut_{limit}"] for limit in CUT_BY if record[f"cut_{limit}"]}
    if main_process:
        bar.write(f"step {record['step']:4d}  reward {record['reward_mean']:.3f}  "
                  f"success {record['success_rate']:.3f}  "
                  f"zero_adv_groups {record['zero_adv_group_frac']:.2f}  M {record['correction_mean']:.3f}"
                  f"+-{record['correction_std']:.3f}  kl {record['kl']:.4f}  "
                  f"entropy {record['entropy']:.3f}  "
                  f"turns {record['turns_mean']:.2f}  {record['step_seconds']:.1f}s"
                  + "".join(f"  cut by --{limit} {cut[limit]}" for limit in cut))
        worst = max(cut, key=cut.get, default=None)
        if worst and cut[worst] > record["episodes"] / 2 and worst not in run.warned:  # once a run
            run.warned.add(worst)
            value = getattr(args, worst) or "the environment's own"
            bar.write(f"warning: --{worst} ({value}) cut {cut[worst]} of {record['episodes']} episodes this "
                      f"step (reward 0): raise it")
    if args.show_every and record["step"] % args.show_every == 0:
        text = transcript(episode, tokenizer)
        bar.write(f"--- step {record['step']}: a sampled episode (>>> policy tokens <<< carry the loss) ---"
                  f"\n{text}")
        run.log({"step": record["step"], "task": episode.task, "reward": episode.reward,
                 "success": episode.success, "transcript": text}, run.samples)


def set_up_processes(args, accelerator):
    """Threads per process on a CPU, and one line where the launch went wrong."""
    world = accelerator.num_processes
    # `accelerate launch` sets OMP_NUM_THREADS=1, too few on a CPU (docs/performance.md)
    if accelerator.device.type == "cpu":
        torch.set_num_threads(args.cpu_threads or max(1, (psutil.cpu_count(logical=False) or 1) // world))
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise SystemExit(f"error: launched as {launched} processes but accelerate sees {world}; on a CPU "
                         f"machine use ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes "
                         f"{launched} train.py")
    if args.tasks_per_step % world:
        raise SystemExit(f"error: --tasks_per_step {args.tasks_per_step} must be a multiple of the {world} "
                         f"processes")


def step_metrics(episodes, advantages, groups, stats, accelerator, max_turns, rollout_s, train_s):
    """One step's metrics over all processes' episodes (gathered), and the sweep's statistics."""
    columns = {"reward": lambda e: e.reward, "success": lambda e: e.success,
               "truncated": lambda e: e.truncated,
               "malformed": lambda e: e.malformed, "unterminated": lambda e: e.unterminated,
               **{f"cut_{limit}": (lambda e, limit=limit: e.cut == limit) for limit in CUT_BY},
               "turns": lambda e: len(e.turn_spans),
               "policy_tokens": lambda e: sum(end - start for start, end in e.turn_spans)}
    per_episode = torch.tensor([[read(e) for read in columns.values()] for e in episodes],
                               dtype=torch.float64)
    # a group whose advantages are all zero carries no signal (equal rewards: too easy, too hard, truncated)
    zero_groups = torch.tensor([[float((advantages[groups == g] == 0).all()), 1.0] for g in groups.unique()])
    # per turn index: the sum of the sampling distribution's entropy over the sampled tokens, and their count
    entropy = torch.zeros(max_turns, 2, dtype=torch.float64)
    for e in episodes:
        for t, values in enumerate(e.sample_entropy[:max_turns]):
            entropy[t] += torch.tensor([sum(values), len(values)], dtype=torch.float64)
    device = accelerator.device
    gathered = accelerator.gather(per_episode.to(device)).cpu()
    column = {name: gathered[:, i] for i, name in enumerate(columns)}  # each over all processes' episodes
    adv = accelerator.gather(advantages.to(device)).cpu()
    zero_groups, entropy = (accelerator.reduce(x.to(device), reduction="sum").cpu()
                            for x in (zero_groups.sum(0), entropy))
    return {
        "reward_mean": column["reward"].mean().item(),
        "success_rate": column["success"].mean().item(),
        "world_size": accelerator.num_processes,
        "episodes": len(gathered),
        "truncated_frac": column["truncated"].mean().item(),
        "malformed_turns": int(column["malformed"].sum()),
        "unterminated_turns": int(column["unterminated"].sum()),
        # the episodes each limit ended
        **{f"cut_{limit}": int(column[f"cut_{limit}"].sum()) for limit in CUT_BY},
        "turns_mean": column["turns"].mean().item(),
        "adv_mean": adv.mean().item(), "adv_std": adv.std().item(),
        "adv_min": adv.min().item(), "adv_max": adv.max().item(),
        "zero_adv_group_frac": (zero_groups[0] / zero_groups[1]).item(),
        "entropy": (entropy[:, 0].sum() / entropy[:, 1].sum().clamp(min=1)).item(),  # nats per sampled token
        "turn_entropy": {str(t): (s / n).item() for t, (s, n) in enumerate(entropy) if n > 0},
        **{k: stats[k] for k in ("correction_mean", "correction_std", "kl", "approx_kl", "clipfrac",
                                 "optimizer_steps", "skipped_steps", "grad_norm") if k in stats},
        "rollout_tokens_per_s": column["policy_tokens"].sum().item() / max(rollout_s, 1e-9),
        "rollout_seconds": rollout_s, "train_seconds": train_s, "step_seconds": rollout_s + train_s,
        "turn_stats": {str(t): s for t, s in stats["turns"].items()},
    }


if __name__ == "__main__":
    main()
