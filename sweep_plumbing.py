"""The machinery under seeupo.sweep(), kept out of the algorithm's way: one training step's micro-batches, sums
over processes, optimizer steps with their non-finite guard, and statistics.

  Plumbing(logprob_fn, optimizer, cfg, reduce_sum, step_seed)   one per sweep() call
    .count(S)               how many samples of S all processes hold together (a process may hold none of a turn)
    .logprobs(S, reference) no-grad log-probs of S, micro-batched: [N, A] float and [N, A] bool mask
    .minibatches(n)         cfg.ppo_epochs passes over n samples, each split into cfg.minibatches random parts
    .optimizer_step(t, S, rows, loss)   one optimizer step on the samples S[rows]: gradients accumulated over
                            micro-batches of at most cfg.token_budget padded tokens, summed over processes,
                            skipped (with a warning) if not finite, clipped to cfg.max_grad_norm; turn t's own
                            optimizer when there is one per turn
    .end_turn(...), .statistics()   what sweep() returns, per turn and for the whole step, over all processes

Why gradients are summed here and not by DDP: processes hold different numbers of samples of a turn, or none,
so DDP's lock-step backward would hang. Instead every process takes every optimizer step, with the gradients
summed over processes by reduce_sum (zero where a process has no sample).
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


def _padded(rows, device):
    """Lists of floats -> a left-aligned [N, A] tensor."""
    out = torch.zeros(len(rows), max([len(r) for r in rows], default=1), device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


class Plumbing:
    """One sweep's machinery; see the module docstring."""

    def __init__(self, logprob_fn, optimizer, cfg, reduce_sum, step_seed):
        self.logprob_fn, self.optimizer, self.cfg, self.reduce_sum = logprob_fn, optimizer, cfg, reduce_sum
        first = optimizer[0] if isinstance(optimizer, list) else optimizer
        self.params = [p for group in first.param_groups for p in group["params"] if p.requires_grad]
        self.device = self.params[0].device  # the policy's: every tensor of the sweep lives there
        self.generator = torch.Generator().manual_seed(step_seed)  # draws the minibatch splits
        self.turns, self.applied = {}, []  # per turn: its statistics; the M_j each sample's advantage was scaled by
        self.steps = []  # per optimizer step: (grad norm, taken); per turn, the sums of what its loss reported
        self.sums = {}

    def count(self, samples):
        return self.reduce_sum(torch.tensor([float(len(samples))], device=self.device)).item()

    def logprobs(self, samples, reference=False):
        """No-grad log-probs of all samples, micro-batched, as one [N, A] tensor and mask, rows in sample order.
        (A process may have no sample of a turn that others have: then N = 0, still on the right device.)"""
        parts = {}
        with torch.no_grad():
            for mb in micro_batches(range(len(samples)), [s.cost for s in samples], self.cfg.token_budget):
                lp, m = self.logprob_fn([samples[i] for i in mb], reference)
                parts.update({i: (lp[k].float(), m[k]) for k, i in enumerate(mb)})
        width = max([lp.shape[0] for lp, _ in parts.values()], default=1)
        logp = torch.zeros(len(samples), width, device=self.device)
        mask = torch.zeros(len(samples), width, dtype=torch.bool, device=self.device)
        for i, (lp, m) in parts.items():
            logp[i, : len(lp)], mask[i, : len(m)] = lp, m
        return logp, mask

    def minibatches(self, n):
        for _ in range(self.cfg.ppo_epochs):
            perm = torch.randperm(n, generator=self.generator).tolist()  # each pass splits the samples anew
            for k in range(self.cfg.minibatches):
                yield perm[k :: self.cfg.minibatches]

    def optimizer_step(self, turn, samples, rows, loss):
        """One optimizer step on samples[i], i in rows. loss(logp, rows) -> (per-sample loss, per-sample KL or
        None, (clipped low, clipped high) per sample or None), for the samples[rows] of one micro-batch."""
        cfg = self.cfg
        optimizer = self.optimizer[turn] if isinstance(self.optimizer, list) else self.optimizer
        # the loss is a mean over the minibatch's samples on ALL processes: divide by the global count
        n_global = self.count(rows)
        for p in self.params:
            p.grad = torch.zeros_like(p)
        sums = self.sums.setdefault(turn, {})
        for micro in micro_batches(rows, [s.cost for s in samples], cfg.token_budget):
            logp, _ = self.logprob_fn([samples[i] for i in micro])
            per_sample, kl, clipped = loss(logp.float(), micro)
            (per_sample.sum() / max(n_global, 1)).backward()
            reported = {"loss": per_sample, "kl": kl, **(dict(zip(("clip_low", "clip_high"), clipped)) if clipped else {})}
            for name, value in reported.items():
                if value is not None:
                    sums[name] = sums.get(name, 0.0) + value.detach().sum().item()
        flat = self.reduce_sum(torch.cat([p.grad.reshape(-1) for p in self.params]))
        if not torch.isfinite(flat).all():  # never let NaN/inf reach the weights
            warnings.warn("seeupo: non-finite gradient, optimizer step skipped")
            self.steps.append((0.0, False))
            return
        offset = 0
        for p in self.params:
            p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()
        self.steps.append((float(torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)), True))
        optimizer.step()

    def end_turn(self, turn, samples, correction, ratio, new_logp, mask):
        """A turn's statistics, means over all processes' samples: loss, KL to the reference, clip fractions
        (low, high, their sum clipfrac; none for a loss without a clip), r_j and the M_j applied (mean and std),
        and approx_kl, the k3 KL of the updated policy to the one that sampled (where samples say how)."""
        self.applied.append(correction)
        sampled = [s.sampled for s in samples]
        approx_kl = torch.zeros(len(samples), device=self.device)
        if all(x is not None for x in sampled):
            d = (_padded(sampled, self.device)[:, : new_logp.shape[1]] - new_logp).clamp(-20.0, 20.0)
            approx_kl = ((d.exp() - d - 1) * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        sums = self.sums.get(turn, {})
        names = ["loss", "kl", *(["clip_low", "clip_high"] if self.cfg.loss != "reinforce" else [])]  # as every process
        moments = [ratio, correction, approx_kl]
        totals = self.reduce_sum(torch.tensor(
            [float(len(samples))] + [sums.get(k, 0.0) for k in names]
            + [v for x in moments for v in (x.sum().item(), (x**2).sum().item())],
            dtype=torch.float64, device=self.device)).tolist()
        n, epochs = totals[0], self.cfg.ppo_epochs
        stats = {"n": int(n), **{k: totals[1 + i] / (n * epochs) for i, k in enumerate(names)}}
        if "clip_low" in stats:
            stats["clipfrac"] = stats["clip_low"] + stats["clip_high"]
            stats["clipfrac_low"], stats["clipfrac_high"] = stats.pop("clip_low"), stats.pop("clip_high")
        mean_std = [_mean_std(totals[k], totals[k + 1], n) for k in range(1 + len(names), len(totals), 2)]
        (stats["ratio_mean"], stats["ratio_std"]), (stats["correction_mean"], stats["correction_std"]) = mean_std[:2]
        if all(x is not None for x in sampled):
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
