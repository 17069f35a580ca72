"""Speed benchmark: batched vs one-at-a-time rollout, the SeeUPO sweep vs one all-turns GSPO update, memory.

    python bench/speed.py                  # the tiny model on the CPU; writes bench/results/speed/tiny.md
    python bench/speed.py --device cuda --config qwen2.5-0.5b --bf16 --gradient_checkpointing
    python bench/speed.py --device cuda --model Qwen/Qwen3-0.6B --qlora     # any model load_policy() takes
    python bench/speed.py --config qwen2.5-0.5b --skip rollout budget --tasks 2 --group 4 --turns 2 \
        --steps_per_turn 1 --batch_sizes 1 4 16 [--qlora]                      # a real-size shape on a CPU

Everything runs in ONE process, on the same model, tasks and batch, side by side:

  rollout  rollout.rollout() on `--tasks` tasks x G episodes: every unfinished episode of the batch in one
           generate() call per turn, vs. each episode played on its own (rollout() on one task with group
           1, G times per task: the naive way), vs. the batched rollout chunked by SamplingArgs.gen_batch_size
           (train.py --gen_batch_size). Episodes/s and generated tokens/s.
  sizes    generated tokens/s of one generate() call at each --batch_sizes (the decode speed of the shape)
  merge    the batched rollout with the LoRA adapter merged into the base weights (peft's merge_adapter, then
           unmerge_adapter) against the unmerged one; and whether unmerging restores the base bit for bit
           (never on a 4-bit base: skipped with --qlora)
  update   on episodes with exactly T turns (a benchmark-only environment, `echo`, played by a scripted
           policy), seeupo.sweep() on per-turn samples (turn t's forward on the prefix up to the end of
           turn t) vs. one all-turns GSPO update on whole-episode samples, the same SweepConfig for both, at
           each --steps_per_turn (1: one optimizer step per turn, the authors'; 16: 4 epochs x 4 minibatches,
           the default). The sweep twice: as it runs (no-grad log-probs remembered for the weights they were
           computed with, rollout.Policy.turn_logprobs) and with every no-grad pass run afresh (as before).
  budget   the same update at two --token_budget values: the budget bounds each micro-batch.
The model's load time and the process's peak resident memory (RSS) are reported too.

Tokens are COUNTED, not computed from formulas: a forward pre-hook on the transformer's decoder stack
sees every forward pass and adds up the tokens in it, padded (the tensor's size) and real (attention
mask; in a generate() decode step, rows that already ended feed padding and count as padding).
Peak memory is measured in a separate, untimed pass: on CUDA torch.cuda.max_memory_allocated(); on the
CPU the allocation events of torch.profiler(profile_memory=True). Either way it is the peak of live
torch tensor bytes during the phase ABOVE what was live when it started (weights are not counted,
activations, gradients, optimizer state, KV cache and logits are); it is not the process RSS.
Times are medians over --repeats runs, the variants interleaved. On a random-init --config model the
rollout measures single-turn episodes: such a model never writes an end-of-turn token, so each episode
ends after one turn of --max_new_tokens.
"""

import argparse
import datetime
import functools
import os
import platform
import random
import statistics
import sys
import time
from dataclasses import replace

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import rollout  # noqa: E402
import seeupo  # noqa: E402
from random_init import CONFIGS, save_random_init  # noqa: E402
from rollout import PolicyArgs, SamplingArgs, turn_samples  # noqa: E402
from support.sweep_tools import LogprobCache  # noqa: E402
from support import tiny  # noqa: E402
from support.tiny import ScriptedPolicy  # noqa: E402


PARTS = ["rollout", "sizes", "merge", "update", "budget"]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="what rollout.load_policy() takes: tiny, tiny-qwen, a Hub name, a folder")
    p.add_argument("--config", choices=sorted(CONFIGS), help="instead of --model: a random-init model of this shape "
                   "(bench/random_init.py saves it to --config_dir once, then load_policy() loads it)")
    p.add_argument("--config_dir", default=os.path.join(os.path.expanduser("~"), ".cache", "seeupo"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bfloat16 base weights, as train.py --bf16")
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--qlora", action="store_true", help="4-bit NF4 base via bitsandbytes (CUDA or CPU)")
    p.add_argument("--env", default="lookup", help="the rollout's environment")
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--group", type=int, default=8, help="G: episodes per task")
    p.add_argument("--max_new_tokens", type=int, default=16)
    p.add_argument("--gen_batch_size", type=int, default=16, help="the chunked rollout's SamplingArgs.gen_batch_size")
    p.add_argument("--turns", type=int, nargs="+", default=[1, 2, 4, 8], help="T of the update benchmark")
    p.add_argument("--steps_per_turn", type=int, nargs="+", default=[1, 16], choices=[1, 16],
                   help="optimizer steps per turn of the update benchmark: 1 (1 x 1) or 16 (4 epochs x 4 minibatches)")
    p.add_argument("--kl_coef", type=float, default=0.0, help="the update's KL weight (0: no reference forward)")
    p.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16, 64], help="the sizes part's batches")
    p.add_argument("--action_tokens", type=int, default=12, help="tokens per scripted turn (end-of-turn included)")
    p.add_argument("--token_budget", type=int, default=seeupo.SweepConfig.token_budget)
    p.add_argument("--small_budget", type=int, default=1024, help="the second --token_budget of the budget table")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_memory", action="store_true", help="skip the (slow, on CPU) memory passes")
    p.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "speed", "tiny.md"))
    args = p.parse_args()
    return args


# ----------------------------------------------------------------------------- counting tokens
class TokenCounter:
    """Counts the tokens of every forward pass through the decoder stack, under a label set by the caller
    (generate()'s one-token decode steps under "LABEL decode").
    padded = the input tensor's size; real = tokens whose result is used: the attention mask's ones, and in a
    generate() decode step the rows still writing (a row that has fed its end-of-turn token feeds padding)."""

    def __init__(self, policy):
        self.stop = torch.tensor(policy.stop_ids)
        self.label, self.counts, self.finished = "", None, None
        policy.model.get_base_model().model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def count(self, fn):
        """Runs fn with counting on: (its result, {label: counts})."""
        self.counts = {}
        out = fn()
        counts, self.counts = self.counts, None
        return out, counts

    def hook(self, module, args, kwargs):
        if self.counts is None:
            return
        ids, attention, cache = kwargs["input_ids"], kwargs.get("attention_mask"), kwargs.get("past_key_values")
        decode = cache is not None and cache.get_seq_length() > 0  # generate(): one new token per row
        if decode:
            token = ids[:, -1].cpu()
            stop = torch.isin(token, self.stop)
            real = int((~self.finished & ~stop).sum())
            self.finished |= stop
        else:  # a whole sequence: a training / log-prob forward, or generate()'s prefill
            real = ids.numel() if attention is None else int(attention.sum())  # generate() drops an all-ones mask
            self.finished = torch.zeros(len(ids), dtype=torch.bool)
        c = self.counts.setdefault(self.label + " decode" * decode, dict(calls=0, real=0, padded=0, largest=0))
        c["calls"] += 1
        c["real"] += real
        c["padded"] += ids.numel()
        c["largest"] = max(c["largest"], ids.numel())


# ----------------------------------------------------------------------------- measuring
def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def peak_memory(fn, device):
    """Peak bytes of live torch tensors while fn runs, above those live when it started (see the docstring)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation and e.extra_fields.device.type == "cpu":
            events.append((e.start_time_ns, e.extra_fields.alloc_size))  # negative for a free
        stack += e.children
    live = peak = 0
    for _, size in sorted(events):
        live += size
        peak = max(peak, live)
    return peak


def cpu_snapshot():
    """(wall s, busy CPU s of the whole machine from /proc/stat, CPU s of this process)."""
    with open("/proc/stat") as f:
        jiffies = [int(x) for x in f.readline().split()[1:]]
    busy = sum(jiffies[:8]) - jiffies[3] - jiffies[4]  # all but idle and iowait (guest time is inside user)
    own = os.times()
    return time.time(), busy / os.sysconf("SC_CLK_TCK"), own.user + own.system


def others_cpu(start, end):
    """Cores kept busy by OTHER processes between two snapshots: the contention our timings ran under."""
    return max((end[1] - start[1]) - (end[2] - start[2]), 0.0) / (end[0] - start[0])


def peak_rss():
    """The process's peak resident memory so far, in bytes (Linux reports it in KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(n):
    return f"{n / 2**20:.1f} MiB" if n is not None else "-"


def measure(variants, args, device):
    """{name: (result of the last run, median seconds)}, the variants interleaved over --repeats rounds."""
    times, results = {name: [] for name in variants}, {}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            torch.manual_seed(args.seed)
            results[name], seconds = timed(fn, device)
            times[name].append(seconds)
    return {name: (results[name], statistics.median(times[name])) for name in variants}


# ----------------------------------------------------------------------------- rollout
def bench_rollout(policy, counter, args, out):
    tasks = envs.ENVS[args.env].tasks("train")[: args.tasks]
    env_factory = functools.partial(envs.make_env, args.env)
    sampling = SamplingArgs(max_new_tokens=args.max_new_tokens)
    chunked = replace(sampling, gen_batch_size=args.gen_batch_size)
    variants = {
        "batched (one generate call per turn)":
            lambda: rollout.rollout(policy, env_factory, tasks, args.group, sampling),
        f"batched, --gen_batch_size {args.gen_batch_size}":
            lambda: rollout.rollout(policy, env_factory, tasks, args.group, chunked),
        "one episode at a time": lambda: [e for task in tasks for _ in range(args.group)
                                          for e in rollout.rollout(policy, env_factory, [task], 1, sampling)],
    }
    rollout.rollout(policy, env_factory, tasks[:2], 2, sampling)  # warm-up: first-call costs are not the benchmark
    counter.label = "generate"
    rows = {}
    for name, fn in variants.items():  # one counted run each, seeded like the timed ones: the same episodes
        torch.manual_seed(args.seed)
        counts = counter.count(fn)[1]
        rows[name] = dict(prefill=counts["generate"], decode=counts["generate decode"])
    for name, (episodes, seconds) in measure(variants, args, policy.device).items():
        generated = sum(end - start for e in episodes for start, end in e.turn_spans)
        turns = sum(len(e.turn_spans) for e in episodes)
        rows[name].update(seconds=seconds, episodes=len(episodes), generated=generated, turns=turns)
    if not args.no_memory:
        for name, fn in variants.items():
            torch.manual_seed(args.seed)
            rows[name]["memory"] = peak_memory(fn, policy.device)
    naive = rows["one episode at a time"]
    out += [f"## Rollout: {args.tasks} `{args.env}` tasks x G={args.group} = {args.tasks * args.group} episodes, "
            f"max_new_tokens {args.max_new_tokens}, temperature {policy.temperature:g}", "",
            "| variant | generate calls | time | episodes/s | generated tokens/s | speed-up | turns played | "
            "generated tokens | prefill tokens real / padded | decode-step tokens real / padded | peak memory |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in rows.items():
        pre, dec = r["prefill"], r["decode"]
        out.append(f"| {name} | {pre['calls']} | {r['seconds']:.2f} s | {r['episodes'] / r['seconds']:.1f} | "
                   f"{r['generated'] / r['seconds']:.0f} | "
                   f"**{(r['episodes'] / r['seconds']) / (naive['episodes'] / naive['seconds']):.1f}x** | {r['turns']} | "
                   f"{r['generated']} | {pre['real']} / {pre['padded']} | {dec['real']} / {dec['padded']} | "
                   f"{mib(r.get('memory'))} |")
    out += ["", "Speed-up: episodes/s over the one-episode-at-a-time rollout. Prefill: each turn's generate() call "
            "first reads the whole context so far (no KV cache is kept across turns). Decode-step tokens: one per "
            "row and step; a row that has ended keeps feeding padding until the longest row of its call ends.", ""]


def bench_sizes(policy, counter, args, out):
    """Generated tokens/s of one generate() call of --max_new_tokens at each batch size (rows never end early
    on a random-init model; on the tiny model they may)."""
    prompt = rollout.render_prompt(policy.tokenizer, envs.make_env(args.env).reset(envs.ENVS[args.env].tasks("train")[0]))
    sampling = SamplingArgs(max_new_tokens=args.max_new_tokens)
    variants = {size: (lambda size=size: policy.generate([prompt] * size, sampling)) for size in args.batch_sizes}
    variants[args.batch_sizes[0]]()  # warm-up
    out += [f"## Decoding speed: one generate() call, a {len(prompt)}-token prompt, {args.max_new_tokens} new tokens",
            "", "| batch | time | generated tokens/s | ms per decode step |", "|--:|--:|--:|--:|"]
    for size, (turns, seconds) in measure(variants, args, policy.device).items():
        tokens = sum(len(ids) for ids, _, _ in turns)
        steps = max(len(ids) for ids, _, _ in turns)
        out.append(f"| {size} | {seconds:.2f} s | {tokens / seconds:.0f} | {1000 * seconds / steps:.0f} |")
    out.append("")


def bench_merge(policy, counter, args, out):
    """The batched rollout with the adapter merged into the base (merge_adapter / unmerge_adapter around it)."""
    if args.qlora:
        out += ["## Merged adapter: skipped (never on a 4-bit base: merging would dequantize and requantize it)", ""]
        return
    tasks = envs.ENVS[args.env].tasks("train")[: args.tasks]
    env_factory = functools.partial(envs.make_env, args.env)
    sampling = SamplingArgs(max_new_tokens=args.max_new_tokens)
    with torch.no_grad():  # a trained adapter is not zero (a new one's B is): merging must move the weights
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01, generator=torch.Generator().manual_seed(args.seed))
    base = {n: p.detach().clone() for n, p in policy.model.named_parameters() if "base_layer" in n}

    def merged():
        policy.model.merge_adapter()
        try:
            return rollout.rollout(policy, env_factory, tasks, args.group, sampling)
        finally:
            policy.model.unmerge_adapter()

    variants = {"adapter kept apart (as train.py does)": lambda: rollout.rollout(policy, env_factory, tasks, args.group,
                                                                               sampling),
                "adapter merged for the rollout": merged}
    results = measure(variants, args, policy.device)
    drift = max((p.detach() - base[n]).abs().max().item() for n, p in policy.model.named_parameters() if n in base)
    out += [f"## Merged adapter: the batched rollout of {args.tasks} x {args.group} episodes", "",
            "| variant | time | generated tokens/s |", "|---|--:|--:|"]
    for name, (episodes, seconds) in results.items():
        generated = sum(end - start for e in episodes for start, end in e.turn_spans)
        out.append(f"| {name} | {seconds:.2f} s | {generated / seconds:.0f} |")
    out += ["", f"After {2 * args.repeats} merges and unmerges the base weights differ from the loaded ones by up to "
            f"{drift:.1e} (0 would be bit for bit).", ""]


# ----------------------------------------------------------------------------- update
class EchoEnv:
    """Benchmark-only environment with exactly max_turns turns: each turn is echoed back; a random reward at
    the end. Implements the envs.py interface (tasks, reset, step, tools, max_turns)."""

    name = "echo"
    tools = None
    system = "Say anything. I repeat what you say. One message per turn."

    def __init__(self, max_turns=2):
        self.max_turns = max_turns

    @staticmethod
    def tasks(split, n=None, seed=0):
        return [{"id": f"echo-{split}-{i}"} for i in range(n or 64)]

    def reset(self, task):
        self.task, self.turn, self.said = task, 0, []
        return [{"role": "system", "content": self.system}, {"role": "user", "content": f"Task {task['id']}."}]

    def step(self, text):
        self.turn += 1
        self.said.append(text)
        done = self.turn >= self.max_turns
        reward = random.Random("|".join(self.said)).random() if done else 0.0
        return [{"role": "user", "content": f"you said {text}"}], done, reward, {}


def scripted_episodes(policy, turns, args):
    """--tasks x G episodes of exactly `turns` turns, each turn --action_tokens random letters (the last one
    the end-of-turn token), played by a ScriptedPolicy: the update only needs the token ids."""
    letters = [i for i in policy.tokenizer.convert_tokens_to_ids(list("abcdefghijklmnopqrstuvwxyz"))
               if i is not None and i != policy.tokenizer.unk_token_id]
    rng = random.Random(args.seed)
    actor = ScriptedPolicy(policy.tokenizer, lambda episode: rng.choices(letters, k=args.action_tokens - 1)
                           + policy.stop_ids[:1], policy.chat_kwargs)
    sampling = SamplingArgs(max_new_tokens=args.action_tokens, max_context=10**9)
    tasks = EchoEnv.tasks("train", args.tasks)
    episodes = rollout.rollout(actor, functools.partial(EchoEnv, max_turns=turns), tasks, args.group, sampling)
    assert all(len(e.turn_spans) == turns for e in episodes)
    rewards = torch.tensor([e.reward for e in episodes])
    groups = torch.tensor([e.group for e in episodes])
    return episodes, seeupo.grae_advantages(rewards, groups)


def counted_logprob_fn(logprob_fn, counter):
    """logprob_fn, labelling each forward for the counter: `old` (no-grad, before the turn's optimizer steps),
    `fwd+bwd` (with grad: the sweep backpropagates every one), `new` (no-grad, after), `ref`."""
    state = {"turn": None, "trained": False}

    def counted(samples, reference=False):
        if samples[0].turn != state["turn"]:
            state.update(turn=samples[0].turn, trained=False)
        if torch.is_grad_enabled():
            state["trained"] = True
            kind = "fwd+bwd"
        else:
            kind = "ref" if reference else "new" if state["trained"] else "old"
        counter.label = f"{kind} {samples[0].turn}"
        return logprob_fn(samples, reference)

    return counted


def sweep_fn(policy, counter, samples, advantages, cfg, turns, afresh=False):
    """One sweep on a fresh optimizer, as train.py runs it (sweep_tools.LogprobCache), or afresh: every no-grad pass
    recomputed (nothing remembered), as before."""
    params = [p for p in policy.model.parameters() if p.requires_grad]

    def run():
        optimizer = torch.optim.AdamW(params, lr=1e-6)  # tiny steps: the weights barely move between runs
        logprob_fn = counted_logprob_fn(policy.turn_logprobs if afresh else LogprobCache(policy), counter)
        return seeupo.sweep(logprob_fn, optimizer, samples, advantages, cfg, turns)

    return run


def update_runs(policy, counter, turns, budget, args, steps_per_turn=1):
    """{variant: row} for seeupo (per-turn samples; as it runs, and with every no-grad pass afresh) and gspo (whole
    episodes) on the same batch of T-turn episodes, and the batch's token totals: whole episodes and the sum over
    turns of the turn prefixes."""
    episodes, advantages = scripted_episodes(policy, turns, args)
    epochs = 1 if steps_per_turn == 1 else 4
    cfg = seeupo.SweepConfig(ppo_epochs=epochs, minibatches=epochs, token_budget=budget, kl_coef=args.kl_coef)
    per_turn, whole = turn_samples(episodes), turn_samples(episodes, whole_episode=True)
    fns = {"seeupo": sweep_fn(policy, counter, per_turn, advantages, cfg, turns),
           "seeupo afresh": sweep_fn(policy, counter, per_turn, advantages, cfg, turns, afresh=True),
           "gspo": sweep_fn(policy, counter, whole, advantages, replace(cfg, algo="gspo", schedule="all"), turns)}
    rows = {}
    for algo, fn in fns.items():
        stats, counts = counter.count(fn)
        rows[algo] = dict(counts=counts, steps=stats["optimizer_steps"])
    for algo, (_, seconds) in measure(fns, args, policy.device).items():
        rows[algo]["seconds"] = seconds
    if not args.no_memory:
        for algo, fn in fns.items():
            rows[algo]["memory"] = peak_memory(fn, policy.device)
    batch = dict(episode=epochs * sum(e.turn_spans[-1][1] for e in episodes),  # every epoch passes over all
                 prefixes=epochs * sum(end for e in episodes for _, end in e.turn_spans))
    return rows, batch


def count(row, *kinds, kind="real", turns=None):
    """Sum of a count (real / padded tokens, calls) over the forwards of these kinds (old, fwd+bwd, new, ref),
    optionally of these turns only."""
    return sum(c[kind] for label, c in row["counts"].items()
               if label.split()[0] in kinds and (turns is None or int(label.split()[1]) in turns))


def bench_update(policy, counter, args, out):
    for steps in args.steps_per_turn:
        epochs = 1 if steps == 1 else 4
        out += [f"## Update, {steps} optimizer step(s) per turn: the SeeUPO sweep (per-turn samples) vs one all-turns "
                "GSPO update (whole episodes)", "",
                f"{args.tasks} tasks x G={args.group} = {args.tasks * args.group} scripted episodes of exactly T turns "
                f"(`echo` env, {args.action_tokens} tokens per turn), the same batch for all; SweepConfig(ppo_epochs="
                f"{epochs}, minibatches={epochs}, token_budget={args.token_budget}, kl_coef={args.kl_coef:g}). Tokens: "
                "real (unpadded) tokens in the forward passes. SeeUPO as it runs (no-grad log-probs remembered for the "
                "weights they were computed with) and afresh (every no-grad pass recomputed, as before).", "",
                "| T | fwd+bwd tokens SeeUPO / GSPO | no-grad tokens SeeUPO / afresh / GSPO | no-grad passes SeeUPO / "
                "afresh | time SeeUPO | time afresh | time GSPO | **time ratio SeeUPO / GSPO** | ratio afresh / GSPO | "
                "optimizer steps SeeUPO / GSPO | peak memory SeeUPO / GSPO |",
                "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
        for turns in args.turns:
            rows, batch = update_runs(policy, counter, turns, args.token_budget, args, steps)
            s, a, g = rows["seeupo"], rows["seeupo afresh"], rows["gspo"]
            grad = [count(r, "fwd+bwd") for r in (s, g)]
            assert grad == [batch["prefixes"], batch["episode"]], (grad, batch)  # turn t: its prefix, no more
            nograd = [count(r, "old", "new", "ref") for r in (s, a, g)]
            passes = [count(r, "old", "new", "ref", kind="calls") for r in (s, a)]
            out.append(f"| {turns} | {grad[0]} / {grad[1]} | {nograd[0]} / {nograd[1]} / {nograd[2]} | {passes[0]} / "
                       f"{passes[1]} | {s['seconds']:.2f} s | {a['seconds']:.2f} s | {g['seconds']:.2f} s | "
                       f"**{s['seconds'] / g['seconds']:.2f}** | {a['seconds'] / g['seconds']:.2f} | "
                       f"{s['steps']} / {g['steps']} | {mib(s.get('memory'))} / {mib(g.get('memory'))} |")
        out.append("")
    out += ["SeeUPO's turn t runs forward and backward on the prefix up to the end of turn t only: its fwd+bwd "
            "tokens equal the sum over turns of the prefix lengths, per epoch (asserted), never T x the episode. "
            "Around each turn's optimizer steps it needs `old` (the current weights, the later turns already "
            "updated) and `new` (for the correction M) log-probs, and with a KL term the reference's. In reverse "
            "order turn t+1's `new` and turn t's `old` are taken with the same weights, and a no-grad pass on turn "
            "t+1's prefix scores turn t's tokens too (causal attention: the same log-probs, to rounding), so "
            "`old` costs a pass only for the first turn updated; the reference's log-probs never change, so each "
            "episode's cost one pass. GSPO runs one old, one fwd+bwd per step and one new forward on the whole "
            "episode.", ""]


def bench_budget(policy, counter, args, out):
    turns = max(args.turns)
    out += [f"## --token_budget bounds the micro-batch (T={turns}, the batch above)", "",
            "| algo | token_budget | fwd+bwd micro-batches | largest forward (padded tokens) | time | peak memory |",
            "|---|--:|--:|--:|--:|--:|"]
    for budget in (args.token_budget, args.small_budget):
        rows, _ = update_runs(policy, counter, turns, budget, args)
        for algo, r in rows.items():
            if algo == "seeupo afresh":
                continue
            largest = max(c["largest"] for c in r["counts"].values())
            out.append(f"| {algo} | {budget} | {count(r, 'fwd+bwd', kind='calls')} | {largest} | "
                       f"{r['seconds']:.2f} s | {mib(r.get('memory'))} |")
    out += ["", "The sweep packs each turn's samples into micro-batches of at most token_budget padded tokens "
            "(a sample larger than the budget goes alone) and accumulates their gradients into one optimizer step, "
            "so the activations held at once are bounded by the budget, not by the batch.", ""]


# ----------------------------------------------------------------------------- main
def main():
    args = parse_args()
    load_start = os.getloadavg()
    started = time.time()
    model_name = args.model
    if args.config:  # saved as a folder, so it loads like any checkpoint (LoRA, QLoRA, bf16: train.py's path)
        folder = os.path.join(args.config_dir, f"{args.config}-random-seed{args.seed}")
        args.model = save_random_init(args.config, folder, args.seed, args.device)
        model_name = f"{args.config} (random init, tiny tokenizer)"
    load_started = time.time()
    policy = rollout.load_policy((tiny.build(args.model, args.seed) if args.model in tiny.EMBEDDED else args.model), PolicyArgs(
        bf16=args.bf16, qlora=args.qlora, gradient_checkpointing=args.gradient_checkpointing, temperature=1.0,
        lora_r=16, lora_alpha=32),  # the setting bench/results/speed/ was measured with
        seed=args.seed, device=args.device)
    load_seconds, rss_loaded = time.time() - load_started, peak_rss()
    counter = TokenCounter(policy)
    n_params = sum(p.numel() for p in policy.model.parameters())
    n_train = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    device = (torch.cuda.get_device_name(policy.device) if policy.device.type == "cuda"
              else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
                   f"{os.cpu_count()} cores)")
    out = ["# Speed benchmark (`bench/speed.py`)", "",
           f"- command: `python {' '.join(sys.argv)}`",
           f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; device: {device}; torch {torch.__version__}",
           f"- model: {model_name}, {n_params / 1e6:.1f}M parameters, LoRA {n_train / 1e3:.0f}k trainable; "
           f"{'bf16' if args.bf16 else 'fp32'}{', gradient checkpointing' if args.gradient_checkpointing else ''}"
           f"{', QLoRA' if args.qlora else ''}",
           f"- times: median of {args.repeats} runs, variants interleaved; peak memory: "
           + ("torch.cuda.max_memory_allocated above the phase's start" if policy.device.type == "cuda" else
              "peak live torch CPU tensor bytes above the phase's start, from torch.profiler(profile_memory=True) "
              "allocation events, in a separate untimed pass (weights excluded; not RSS)"),
           f"- load: {load_seconds:.1f} s (load_policy: weights, quantization, adapter); peak resident memory of the "
           f"process: {rss_loaded / 2**30:.2f} GiB after loading, PEAKRSS at the end",
           "- LOADAVG", ""]
    print(f"load average at the start: {load_start}")
    print("\n".join(out), flush=True)
    contention = []
    for part, bench in (("rollout", bench_rollout), ("sizes", bench_sizes), ("merge", bench_merge),
                        ("update", bench_update), ("budget", bench_budget)):
        if part not in args.skip:
            n, start = len(out), cpu_snapshot()
            bench(policy, counter, args, out)
            contention.append(f"{part} {others_cpu(start, cpu_snapshot()):.2f}")
            print("\n".join(out[n:]), flush=True)
    load_end = os.getloadavg()
    i = out.index("- LOADAVG")
    out[i] = (
        f"- load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in load_end)} at the end (the load includes this benchmark's own threads); "
        f"cores kept busy by OTHER processes during each part (/proc/stat minus this process): "
        f"{', '.join(contention)}; wall {time.time() - started:.0f} s")
    print(out[i])
    out = [line.replace("PEAKRSS", f"{peak_rss() / 2**30:.2f} GiB") for line in out]
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
