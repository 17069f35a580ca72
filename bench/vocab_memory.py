"""What the real vocabulary costs an update, and a scorer that does not pay for it: peak memory and time of
the passes through rollout.Policy._score on `tiny` (V = 233) and `tiny-qwen` (V = 151,936) at T = 2 and 4.

    python bench/vocab_memory.py          # writes bench/results/vocab_memory.md (about 10 min on 2 CPU cores)

Before issue 28, Policy._score asked the model for the logits of the kept rows, [B, keep, V] float32, then
gathered the rows that predict a scored token and took a log-softmax over them, [B, A, V] twice more (the
gathered rows / the temperature, and the log-softmax, kept for the backward). At V = 151,936 each [B, A, V]
is 0.6 MB a row. The scorers measured (same arguments, same result):

  full_logits      that _score, kept here as the reference
  chunked_softmax  the model's logits as full_logits, then the scored rows' log-softmax a chunk of rows at a
                   time, each under torch.utils.checkpoint (backward recomputes a chunk instead of keeping it),
                   only the scored token's entry kept: no [B, A, V] tensor, the [B, keep, V] logits remain
  today            Policy._score now ("chunked_head" in the first results): the decoder's hidden states (the
                   model without its output layer), the rows that predict a scored token gathered from them,
                   and the output layer applied a chunk of rows at a time, each under checkpoint as above:
                   neither the logits nor the log-softmax is ever whole. Valid for causal LMs whose logits are
                   lm_head(last hidden state), Qwen2 / 2.5 / 3 among them

Each is checked equal to full_logits (log-probs to 1e-6, the LoRA gradients of a weighted sum to 1e-6 relative)
before it is measured (a chunk's rows pass through the same matmul and log-softmax kernels as full_logits'). The
passes, on B episodes of bench/speed.py's `echo` environment (T turns of --action_tokens scripted tokens,
replies echoed):

  no-grad    _score without a gradient on turn T's prefix as sweep_tools.LogprobCache calls it (the sweep's old /
             new / reference passes), scoring every policy token of the prefix (A = T x action tokens)
  fwd+bwd    _score with a gradient on turn T's tokens, then backward: one optimizer step's micro-batch
  sweep      seeupo.sweep, the authors' one optimizer step per turn (the batch in one micro-batch), KL 0.05
             (so reference passes run too): one whole SeeUPO update
  gspo       the same update on whole-episode samples, all turns at once (A = T x action tokens with grad)

Peak memory is bench/speed.py's: live torch CPU tensor bytes above the pass's start (torch.profiler allocation
events; weights excluded, not RSS). Times: median of --repeats, wall and this process's CPU seconds. The models are random init (memory and time do
not depend on the values); tiny's tokenizer is tiny.tiny_tokenizer, tiny-qwen's qwen_offline's.
"""

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
import types
from dataclasses import replace

import torch
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import qwen_offline  # noqa: E402
import seeupo  # noqa: E402
from rollout import Policy, load_policy, turn_samples  # noqa: E402
from support.sweep_tools import LogprobCache  # noqa: E402
from speed import mib, peak_memory, scripted_episodes  # noqa: E402
from support.tiny import TINY_QWEN_CONFIG, tiny_model, tiny_tokenizer  # noqa: E402

ROWS_PER_CHUNK = 2**24  # elements of one [rows, V] float32 chunk: 64 MiB (110 rows at V = 151,936)


# ----------------------------------------------------------------------------- the drop-ins for Policy._score
def _scored(self, samples, positions):
    """What _score computes before the model: ids [B, L], the scored tokens' columns, mask and ids [B, A]."""
    prefixes = [s.data.ids[: s.data.end] for s in samples]
    ids, attention, position_ids = self._batch(prefixes)
    B, L = ids.shape
    columns = [[L - len(p) + q for q in pos] for p, pos in zip(prefixes, positions)]
    A = max(len(c) for c in columns)
    column = torch.zeros(B, A, dtype=torch.long)
    mask = torch.zeros(B, A, dtype=torch.bool)
    for i, c in enumerate(columns):
        column[i, : len(c)], mask[i, : len(c)] = torch.tensor(c), True
    column, mask = column.to(ids.device), mask.to(ids.device)
    return ids, attention, position_ids, column, mask, ids.gather(1, column)


def _token_logprob(logits, tokens, temperature):
    """log softmax(logits / temperature)[token] of each row of a chunk. torch's own log_softmax, row by row the
    same kernel as _score's, so the values are bit for bit today's (token logit - logsumexp is not: its sum over
    151,936 terms rounds differently, by up to 2e-5 on logits of scale 3; it is the more accurate of the two)."""
    return (logits.float() / temperature).log_softmax(-1).gather(-1, tokens[:, None])[:, 0]


def _chunked(fn, n_rows, rows, *args):
    """fn(chunk of row indices, *args) over chunks of `rows` rows, each under checkpoint when training."""
    out = []
    for k in range(0, n_rows, rows):
        index = torch.arange(k, min(k + rows, n_rows), device=args[0].device)
        out.append(checkpoint(fn, index, *args, use_reentrant=False) if torch.is_grad_enabled() else fn(index, *args))
    return torch.cat(out)


def chunked_softmax(self, samples, positions, reference):
    """full_logits with each scored row's log-prob from them a chunk at a time."""
    self.model.train(torch.is_grad_enabled())
    ids, attention, position_ids, column, mask, tokens = _scored(self, samples, positions)
    L = ids.shape[1]
    keep = L - int(column[mask].min()) + 1
    with self._adapter(reference):
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=position_ids,
                            logits_to_keep=keep, use_cache=False).logits  # [B, keep, V]
    b, a = mask.nonzero(as_tuple=True)  # the scored (sample, position) pairs, in order
    rows, toks = column[b, a] - 1 - (L - keep), tokens[b, a]
    t = self.temperature or 1.0

    def piece(index, logits):
        return _token_logprob(logits[b[index], rows[index]], toks[index], t)

    flat = _chunked(piece, len(b), max(1, ROWS_PER_CHUNK // logits.shape[-1]), logits)
    return torch.zeros(mask.shape, device=flat.device).masked_scatter(mask, flat), mask


def full_logits(self, samples, positions, reference):
    """Policy._score before issue 28: the model's logits of every kept row [B, keep, V], then the log-softmax of
    the gathered scored rows [B, A, V] (kept for the backward)."""
    self.model.train(torch.is_grad_enabled())
    ids, attention, position_ids, column, mask, tokens = _scored(self, samples, positions)
    B, L = ids.shape
    keep = L - int(column[mask].min()) + 1
    with self._adapter(reference):
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=position_ids,
                            logits_to_keep=keep, use_cache=False).logits  # [B, keep, V]
    row = torch.where(mask, column - 1 - (L - keep), 0)
    logp = (logits[torch.arange(B)[:, None], row].float() / (self.temperature or 1.0)).log_softmax(-1)  # [B, A, V]
    return logp.gather(-1, tokens[..., None])[..., 0] * mask, mask


SCORERS = {"full_logits": full_logits, "chunked_softmax": chunked_softmax, "today": None}  # the first: reference


def use(policy, name):
    """Make `policy` score with SCORERS[name] (today: Policy._score itself)."""
    policy._score = types.MethodType(SCORERS[name] or Policy._score, policy)


# ----------------------------------------------------------------------------- checks and passes
def check_equal(policy, samples):
    """Each scorer against full_logits (the first): (largest log-prob difference, largest relative gradient difference)."""
    weights = torch.Generator().manual_seed(0)
    out, reference = {}, None
    for name in SCORERS:
        use(policy, name)
        policy.model.zero_grad()
        logp, mask = policy._score(samples, [s.data.policy_positions for s in samples], False)
        w = torch.randn(logp.shape, generator=weights.manual_seed(0))
        (logp * w * mask).sum().backward()
        grads = torch.cat([p.grad.flatten() for p in policy.model.parameters() if p.requires_grad])
        if reference is None:
            reference = logp.detach(), grads
            continue
        out[name] = ((logp.detach() - reference[0]).abs().max().item(),
                     ((grads - reference[1]).abs().max() / reference[1].abs().max()).item())
    use(policy, "today")
    policy.model.zero_grad()
    return out


def passes(policy, episodes, advantages, turns):
    """The measured passes, as zero-argument callables."""
    per_turn, whole = turn_samples(episodes), turn_samples(episodes, whole_episode=True)
    last = [s for s in per_turn if s.turn == turns - 1]
    params = [p for p in policy.model.parameters() if p.requires_grad]
    cfg = seeupo.SweepConfig(kl_coef=0.05, ppo_epochs=1, minibatches=1)

    def no_grad():
        with torch.no_grad():  # what LogprobCache's pass scores: every policy token of the prefix
            policy._score(last, [s.data.policy_positions for s in last], False)

    def fwd_bwd():
        logp, mask = policy.turn_logprobs(last)
        (logp * mask).sum().backward()
        policy.model.zero_grad(set_to_none=True)

    def update(samples, c):
        def run():
            seeupo.sweep(LogprobCache(policy), torch.optim.AdamW(params, lr=1e-6), samples, advantages, c, turns)
            policy.model.zero_grad(set_to_none=True)
        return run

    return {"no-grad": no_grad, "fwd+bwd": fwd_bwd, "sweep": update(per_turn, cfg),
            "gspo": update(whole, replace(cfg, algo="gspo", schedule="all"))}


def shape(samples, positions):
    """`A x keep`: the scored positions and the logit rows _score keeps for these samples (one batch)."""
    keep = max(s.data.end - pos[0] for s, pos in zip(samples, positions)) + 1  # from the earliest predicting row
    return f"{max(len(pos) for pos in positions)} x {keep}"


def timed(fn, repeats):
    """Median wall seconds and median CPU seconds of this process (all its threads): the CPU time is what the
    pass costs even when other processes share the cores (the wall time then grows, it does not)."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


# ----------------------------------------------------------------------------- the models
def tiny_folder(seed):
    """A random-init tiny (its warm-up changes no shape), saved as a folder like tiny-qwen's."""
    folder = os.path.join(tempfile.mkdtemp(prefix="vocab-memory-"), "tiny")
    tokenizer = tiny_tokenizer(seed)
    tiny_model(tokenizer, seed).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["tiny", "tiny-qwen"], choices=["tiny", "tiny-qwen"])
    p.add_argument("--turns", type=int, nargs="+", default=[2, 4])
    p.add_argument("--tasks", type=int, default=4)
    p.add_argument("--group", type=int, default=8, help="B = tasks x group episodes")
    p.add_argument("--action_tokens", type=int, default=12, help="tokens per scripted turn (end-of-turn included)")
    p.add_argument("--scorers", nargs="+", default=list(SCORERS), choices=list(SCORERS))
    p.add_argument("--passes", nargs="*", default=["no-grad", "fwd+bwd", "sweep", "gspo"], help="none: the checks only")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no_memory", action="store_true", help="times only (the memory passes are slow on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "vocab_memory.md"))
    args = p.parse_args()
    started = time.time()
    out = ["# What the vocabulary costs an update (`bench/vocab_memory.py`)", "",
           f"- command: `python {' '.join(sys.argv)}`",
           f"- date: {datetime.datetime.now():%Y-%m-%d %H:%M}; CPU ({platform.processor() or platform.machine()}, "
           f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores); torch {torch.__version__}",
           f"- B = {args.tasks * args.group} `echo` episodes of T turns of {args.action_tokens} tokens; random-init "
           f"models, LoRA r=16; peak = live torch CPU tensor bytes above the pass's start (weights excluded); "
           f"time = median of {args.repeats} (wall, and CPU seconds of this process: 2 threads)", ""]
    print("\n".join(out), flush=True)
    for model in args.models:
        folder = qwen_offline.build(os.path.join(tempfile.mkdtemp(), "tiny-qwen"), args.seed, TINY_QWEN_CONFIG) if model == "tiny-qwen" \
            else tiny_folder(args.seed)  # random init: memory and time do not depend on the values
        policy = load_policy(folder, seed=args.seed)
        with torch.no_grad():  # a trained adapter is not zero (a new one's B is): gradients reach every LoRA matrix
            for name, param in policy.model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.05, generator=torch.Generator().manual_seed(args.seed))
        V = policy.model.get_base_model().get_output_embeddings().out_features
        lines = [f"## {model}: V = {V}", "",
                 "| T | tokens per episode | pass | A x keep rows | scorer | peak memory | time | CPU time |",
                 "|--:|--:|---|--:|---|--:|--:|--:|"]
        for turns in args.turns:
            ns = types.SimpleNamespace(seed=args.seed, action_tokens=args.action_tokens, tasks=args.tasks,
                                       group=args.group)
            episodes, advantages = scripted_episodes(policy, turns, ns)
            length = statistics.mean(len(e.token_ids) for e in episodes)
            last = [s for s in turn_samples(episodes) if s.turn == turns - 1]
            for name, (dlogp, dgrad) in check_equal(policy, last).items():
                lines.append(f"| {turns} | | check | | {name} vs full_logits | log-probs within {dlogp:.1e}, "
                             f"gradients {dgrad:.1e} relative | | |")
                assert dlogp <= 1e-6 and dgrad <= 1e-6, (name, dlogp, dgrad)
            rows = {"no-grad": shape(last, [s.data.policy_positions for s in last]),
                    "fwd+bwd": shape(last, [s.data.positions for s in last])}
            for pass_name, fn in passes(policy, episodes, advantages, turns).items():
                if pass_name not in args.passes:
                    continue
                for scorer in args.scorers:
                    use(policy, scorer)
                    fn()  # warm-up: first-call allocations are not the measurement
                    seconds, cpu = timed(fn, args.repeats)
                    peak = None if args.no_memory else peak_memory(fn, policy.device)
                    line = (f"| {turns} | {length:.0f} | {pass_name} | {rows.get(pass_name, '')} | {scorer} | "
                            f"{mib(peak)} | {seconds:.2f} s | {cpu:.2f} s |")
                    lines.append(line)
                    print(line, flush=True)
            use(policy, "today")
        out += lines + [""]
        print("\n".join(lines), flush=True)
    out.append(f"wall {time.time() - started:.0f} s")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
