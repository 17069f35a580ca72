"""The incidental machinery under seeupo.sweep(), kept out of the algorithm's way: packing micro-batches by token
budget, sums over processes, the non-finite guard's bookkeeping, and statistics (one dict of sums per turn,
reduced over processes once, when the turn ends).

  Plumbing(logprob_fn, optimizer, cfg, reduce_sum, step_seed)   one per sweep() call
    .count(S)               how many samples of S all processes hold together (a process may hold none of a turn)
    .logprobs(S, reference) no-grad log-probs of S, micro-batched: [N, A] float and [N, A] bool mask
    .minibatches(n)         cfg.ppo_epochs passes over n samples, each split into cfg.minibatches random parts
    .micro_batches(S, rows) rows split into micro-batches of at most cfg.token_budget padded tokens
    .sum_gradients()        every trainable gradient summed over processes (zeros where a process had no sample)
    .finite_gradients()     False, with a warning, where a gradient is not finite: sweep() then skips the step
    .record(...), .took_step(norm), .sampled(S, width), .end_turn(...), .statistics()   what sweep() returns

Why gradients are summed here and not by DDP (and why train.py never calls accelerator.prepare on the model):
processes hold different numbers of samples of a turn, or none, so DDP's lock-step backward would hang. Instead
every process takes every optimizer step, with the gradients summed over processes by reduce_sum.
"""

import warnings

import torch


def local_sum(x):
    return x  # the single-process reduce: every sum is already global


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


def left_aligned(rows, width, device, dtype=torch.float32):
    """Rows of different lengths (lists or 1-D tensors) in one [N, width] tensor, each from column 0, and its mask."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long, device=device)
    mask = torch.arange(width, device=device) < lengths[:, None]  # [N, width]
    if rows and all(torch.is_tensor(row) for row in rows):
        values = torch.cat([row.reshape(-1) for row in rows]).to(device=device, dtype=dtype)
    else:
        values = torch.tensor([v for row in rows for v in row], dtype=dtype, device=device)
    out = torch.zeros(len(rows), width, dtype=dtype, device=device)
    out[mask] = values  # one copy, in row order (one copy a row made the tabular tests 2x slower)
    return out, mask


class Plumbing:
    """One sweep's machinery; see the module docstring."""

    def __init__(self, logprob_fn, optimizer, cfg, reduce_sum, step_seed):
        self.logprob_fn, self.cfg, self.reduce_sum = logprob_fn, cfg, reduce_sum
        first = optimizer[0] if isinstance(optimizer, list) else optimizer
        self.params = [p for group in first.param_groups for p in group["params"] if p.requires_grad]
        self.device = self.params[0].device  # the policy's: every tensor of the sweep lives there
        self.generator = torch.Generator().manual_seed(step_seed)  # draws the minibatch splits
        self.sums = {}  # per turn: the sums of what its loss reported (loss, kl, clip fractions)
        self.turns, self.applied = {}, []  # per turn: its statistics; the M_j each sample's advantage was scaled by
        self.steps = []  # per optimizer step: (grad norm, taken)

    def count(self, samples):
        return self.reduce_sum(torch.tensor([float(len(samples))], device=self.device)).item()

    def logprobs(self, samples, reference=False):
        """No-grad log-probs of all samples, micro-batched, as one [N, A] tensor and mask, rows in sample order.
        (A process may have no sample of a turn that others have: then N = 0, still on the right device.)"""
        rows, masks = [None] * len(samples), [None] * len(samples)
        with torch.no_grad():
            for mb in self.micro_batches(samples, range(len(samples))):
                lp, m = self.logprob_fn([samples[i] for i in mb], reference)
                for k, i in enumerate(mb):
                    rows[i], masks[i] = lp[k].float(), m[k]
        width = max([len(r) for r in rows], default=1)
        logp, _ = left_aligned(rows, width, self.device)
        mask, _ = left_aligned(masks, width, self.device, dtype=torch.bool)
        return logp, mask

    def minibatches(self, n):
        for _ in range(self.cfg.ppo_epochs):
            perm = torch.randperm(n, generator=self.generator).tolist()  # each pass splits the samples anew
            for k in range(self.cfg.minibatches):
                yield perm[k :: self.cfg.minibatches]

    def micro_batches(self, samples, rows):
        return micro_batches(rows, [s.cost for s in samples], self.cfg.token_budget)

    def sum_gradients(self):
        """Every trainable parameter's gradient summed over processes (a parameter without one counts as zeros)."""
        flat = self.reduce_sum(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                          for p in self.params]))
        offset = 0
        for p in self.params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def finite_gradients(self):
        if all(torch.isfinite(p.grad).all() for p in self.params):
            return True
        warnings.warn("seeupo: non-finite gradient, optimizer step skipped")
        self.steps.append((0.0, False))
        return False

    def took_step(self, grad_norm):
        self.steps.append((float(grad_norm), True))

    def record(self, turn, loss, kl, clipped):
        """A micro-batch's per-sample loss, KL (or None) and clip fractions (low, high; or None), summed per turn."""
        sums = self.sums.setdefault(turn, {})
        reported = {"loss": loss, "kl": kl, **dict(zip(("clipfrac_low", "clipfrac_high"), clipped or ()))}
        for name, value in reported.items():
            if value is not None:
                sums[name] = sums.get(name, 0.0) + value.detach().sum().item()

    def sampled(self, samples, width):
        """[N, width] log pi of each sample's tokens when they were sampled, or None where samples do not say."""
        if any(s.sampled is None for s in samples):
            return None
        return left_aligned([s.sampled[:width] for s in samples], width, self.device)[0]

    def end_turn(self, turn, samples, correction, ratio, approx_kl):
        """A turn's statistics, means over all processes' samples: loss, KL to the reference, clip fractions
        (low, high, their sum clipfrac; none for a loss without a clip), r_j and the M_j applied (mean and std),
        and approx_kl, the k3 KL of the updated policy to the one that sampled (where samples say how)."""
        self.applied.append(correction)
        sums = self.sums.get(turn, {})
        names = ["loss", "kl", *(["clipfrac_low", "clipfrac_high"] if self.cfg.loss != "reinforce" else [])]
        moments = [ratio, correction, approx_kl if approx_kl is not None else torch.zeros_like(ratio)]
        totals = self.reduce_sum(torch.tensor(
            [float(len(samples))] + [sums.get(k, 0.0) for k in names]
            + [v for x in moments for v in (x.sum().item(), (x**2).sum().item())],
            dtype=torch.float64, device=self.device)).tolist()
        n, epochs = totals[0], self.cfg.ppo_epochs
        stats = {"n": int(n), **{k: totals[1 + i] / (n * epochs) for i, k in enumerate(names)}}
        if "clipfrac_low" in stats:
            stats["clipfrac"] = stats["clipfrac_low"] + stats["clipfrac_high"]
        mean_std = [_mean_std(totals[k], totals[k + 1], n) for k in range(1 + len(names), len(totals), 2)]
        (stats["ratio_mean"], stats["ratio_std"]), (stats["correction_mean"], stats["correction_std"]) = mean_std[:2]
        if approx_kl is not None:
            stats["approx_kl"] = mean_std[2][0]
        self.turns[turn] = stats

    def statistics(self):
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
