"""The mechanics under seeupo.sweep(), kept out of the algorithm's way: micro-batches by token budget, no-grad
log-probs of many samples, minibatch splits, sums over processes, the non-finite guard; and SweepStats, the one
recorder of what a sweep reports (one dict of sums per turn, reduced over processes once, when the turn ends);
and LogprobCache, rollout.Policy.turn_logprobs for one sweep, remembering its no-grad passes.

Why gradients are summed here and not by DDP (and why train.py never calls accelerator.prepare on the model):
processes hold different numbers of samples of a turn, or none, so DDP's lock-step backward would hang. Instead
every process takes every optimizer step, with the gradients summed over processes by reduce_sum.
"""

import warnings

import torch


def local_sum(x):
    return x  # the single-process reduce: every sum is already global


def global_count(samples, reduce_sum, device):
    """How many samples all processes hold together (a process may hold none of a turn)."""
    return reduce_sum(torch.tensor([float(len(samples))], device=device)).item()


def micro_batches(indices, costs, token_budget):
    """Split sample indices into micro-batches whose padded size (count x longest) fits token_budget.
    Longest first, so that samples of similar length share a micro-batch and pad each other little."""
    batch, out = [], []
    for i in sorted(indices, key=lambda i: -costs[i]):
        if batch and (len(batch) + 1) * costs[batch[0]] > token_budget:
            out.append(batch)
            batch = []
        batch.append(i)
    return out + [batch] if batch else out


def minibatches(n, epochs, splits, generator):
    """`epochs` passes over n samples, each a new random permutation split `splits` ways."""
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).tolist()
        for k in range(splits):
            yield perm[k::splits]


def left_aligned(rows, width, device, dtype=torch.float32):
    """Rows of different lengths (lists or 1-D tensors) in one [N, width] tensor, each from column 0, and its mask."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long, device=device)
    mask = torch.arange(width, device=device) < lengths[:, None]  # [N, width]
    if rows and all(torch.is_tensor(row) for row in rows):
        values = torch.cat([row.reshape(-1) for row in rows]).to(device=device, dtype=dtype)
    else:
        values = torch.tensor([v for row in rows for v in row], dtype=dtype, device=device)
    out = torch.zeros(len(rows), width, dtype=dtype, device=device)
    out[mask] = values  # one copy, in row order (docs/performance.md)
    return out, mask


def no_grad_logprobs(logprob_fn, samples, token_budget, device, reference=False):
    """No-grad log-probs of all samples, micro-batched, as one [N, A] float tensor and bool mask, rows in sample
    order. (A process may have no sample of a turn that others have: then N = 0, still on the right device.)"""
    rows, masks = [None] * len(samples), [None] * len(samples)
    with torch.no_grad():
        for mb in micro_batches(range(len(samples)), [s.cost for s in samples], token_budget):
            lp, m = logprob_fn([samples[i] for i in mb], reference)
            for k, i in enumerate(mb):
                rows[i], masks[i] = lp[k].float(), m[k]
    width = max([len(r) for r in rows], default=1)
    logp, _ = left_aligned(rows, width, device)
    mask, _ = left_aligned(masks, width, device, dtype=torch.bool)
    return logp, mask


def sampled_logprobs(samples, width, device):
    """[N, width] log pi of each sample's tokens when they were sampled, or None where samples do not say."""
    if any(s.sampled is None for s in samples):
        return None
    return left_aligned([s.sampled[:width] for s in samples], width, device)[0]


def sum_gradients(params, reduce_sum):
    """Every trainable parameter's gradient summed over processes (a parameter without one counts as zeros)."""
    flat = reduce_sum(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                 for p in params]))
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def gradients_finite(params):
    """False, with a warning, where a gradient is not finite: sweep() then skips the optimizer step."""
    if all(torch.isfinite(p.grad).all() for p in params):
        return True
    warnings.warn("seeupo: non-finite gradient, optimizer step skipped")
    return False


class SweepStats:
    """What one sweep() reports: per turn, the sums of what its loss reported, then its means (end_turn); the
    optimizer steps taken and skipped; the M_j applied. reduce_sum makes every number global."""

    def __init__(self, loss, ppo_epochs, reduce_sum, device):
        self.loss, self.epochs, self.reduce_sum, self.device = loss, ppo_epochs, reduce_sum, device
        self.sums = {}  # per turn: the sums of what its loss reported (loss, kl, clip fractions)
        self.turns, self.applied = {}, []  # per turn: its statistics; the M_j each sample's advantage was scaled by
        self.steps = []  # per optimizer step: (grad norm, taken)

    def record(self, turn, loss, kl, clipped):
        """A micro-batch's per-sample loss, KL (or None) and clip fractions (low, high; or None), summed per turn."""
        sums = self.sums.setdefault(turn, {})
        reported = {"loss": loss, "kl": kl, **dict(zip(("clipfrac_low", "clipfrac_high"), clipped or ()))}
        for name, value in reported.items():
            if value is not None:
                sums[name] = sums.get(name, 0.0) + value.detach().sum().item()

    def optimizer_step(self, grad_norm):
        self.steps.append((float(grad_norm), True))

    def skipped_step(self):
        self.steps.append((0.0, False))

    def end_turn(self, turn, samples, correction, ratio, approx_kl):
        """A turn's statistics, means over all processes' samples: loss, KL to the reference, clip fractions
        (low, high, their sum clipfrac; none for a loss without a clip), r_j and the M_j applied (mean and std),
        and approx_kl, the k3 KL of the updated policy to the one that sampled (where samples say how)."""
        self.applied.append(correction)
        sums = self.sums.get(turn, {})
        names = ["loss", "kl", *(["clipfrac_low", "clipfrac_high"] if self.loss != "reinforce" else [])]
        moments = [ratio, correction, approx_kl if approx_kl is not None else torch.zeros_like(ratio)]
        totals = self.reduce_sum(torch.tensor(
            [float(len(samples))] + [sums.get(k, 0.0) for k in names]
            + [v for x in moments for v in (x.sum().item(), (x**2).sum().item())],
            dtype=torch.float64, device=self.device)).tolist()
        n = totals[0]
        stats = {"n": int(n), **{k: totals[1 + i] / (n * self.epochs) for i, k in enumerate(names)}}
        if "clipfrac_low" in stats:
            stats["clipfrac"] = stats["clipfrac_low"] + stats["clipfrac_high"]
        mean_std = [_mean_std(totals[k], totals[k + 1], n) for k in range(1 + len(names), len(totals), 2)]
        stats["ratio_mean"], stats["ratio_std"] = mean_std[0]
        stats["correction_mean"], stats["correction_std"] = mean_std[1]
        if approx_kl is not None:
            stats["approx_kl"] = mean_std[2][0]
        self.turns[turn] = stats

    def summary(self):
        """Per turn (end_turn's), the optimizer steps taken and skipped and their mean gradient norm, the M_j that
        scaled each (episode, turn) sample's advantage (mean and std), and the turns' KL, approx_kl and clipfrac
        averaged over their samples."""
        applied = torch.cat(self.applied) if self.applied else torch.ones(0)
        n, m1, m2 = self.reduce_sum(torch.tensor([len(applied), applied.sum().item(), (applied**2).sum().item()],
                                                 dtype=torch.float64, device=self.device)).tolist()
        mean, std = _mean_std(m1, m2, n)
        taken = [norm for norm, ok in self.steps if ok]
        n_turns = max(sum(s["n"] for s in self.turns.values()), 1)  # the turn statistics are global already
        out = {"turns": self.turns, "optimizer_steps": len(taken), "skipped_steps": len(self.steps) - len(taken),
               "grad_norm": sum(taken) / max(len(taken), 1), "correction_mean": mean, "correction_std": std}
        for key in ("kl", "approx_kl", "clipfrac"):
            if all(key in s for s in self.turns.values()):
                out[key] = sum(s[key] * s["n"] for s in self.turns.values()) / n_turns
        return out


def _mean_std(s1, s2, n):
    mean = s1 / max(n, 1)
    return mean, max(s2 / max(n, 1) - mean**2, 0.0) ** 0.5


class LogprobCache:
    """Policy.turn_logprobs for ONE sweep, remembering its no-grad passes. Such a pass scores EVERY policy
    token of its prefix, so the pass on turn t+1's prefix holds turn t's log-probs too (the sweep's `new` of
    t+1, `old` of t), and the reference policy's never change. The current policy's memory holds while the
    trainable weights equal its copy of them (a step forgets it); values agree with a pass of their own to
    float rounding (test_rollout.py; docs/performance.md)."""

    def __init__(self, policy):
        self.policy, self.memory, self.weights = policy, {True: {}, False: {}}, []

    def __call__(self, samples, reference=False):
        if torch.is_grad_enabled():  # an optimizer step's forward: always a pass of its own
            return self.policy.turn_logprobs(samples, reference)
        trainable = [p for p in self.policy.model.parameters() if p.requires_grad]
        if not reference and not (self.weights
                                  and all(torch.equal(a, b) for a, b in zip(self.weights, trainable))):
            # the weights moved
            self.memory[False], self.weights = {}, [p.detach().clone() for p in trainable]
        memory = self.memory[reference]  # {episode ids: {position: log pi}}
        todo = [s for s in samples if not set(s.data.positions) <= memory.get(tuple(s.data.ids), {}).keys()]
        if todo:
            logp, _ = self.policy._score(todo, [s.data.policy_positions for s in todo], reference)
            for s, row in zip(todo, logp.tolist()):
                memory.setdefault(tuple(s.data.ids), {}).update(zip(s.data.policy_positions, row))
        rows = [[memory[tuple(s.data.ids)][q] for q in s.data.positions] for s in samples]
        return left_aligned(rows, max([len(r) for r in rows], default=1), self.policy.device)
