"""SeeUPO, the algorithm and nothing else (arXiv 2602.06554; restated in docs/algorithm.md).

What is here:
  grae_advantages  A_j = R_j - mean_group(R), optional group-std division, batch normalisation, clip +-3
  correction_update  r_j = clip(s_j), M_j <- clip(M_j r_j): the HAML/HAPPO-style correction
  the per-turn losses: gspo_loss (sequence-level, SeeUPO's), grpo_loss (token-level PPO-clip),
                   reinforce_loss, and kl_k3 (low-variance KL to the reference policy)
  sweep            ONE training step: the reverse-turn sequential update with the HAML-style correction
                   M_j, and -- by arguments, through the same lines -- its ablations (order, correction)
                   and the all-turns-at-once baselines GRPO, GSPO and REINFORCE.

The sweep never sees a model. It reaches the policy through one callable,

    logprob_fn(samples: list[TurnSample], reference: bool = False) -> (token_logprobs, action_mask)

that returns, for each sample, the log-probs of its action tokens under the current policy (or, with
reference=True, under the reference policy), left-aligned in a [B, A] float tensor with a [B, A] bool
mask. `rollout.Policy.turn_logprobs` implements it for an LLM (turn t's forward runs on the prefix up to
the end of turn t only); `tabular.Tabular` implements it for a tabular softmax policy. SweepConfig holds the
sweep's knobs, each documented once; train.py builds it from its flags of the same names.
"""

import random
import warnings
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

ALGOS = ("seeupo", "grpo", "gspo", "reinforce")
ORDERS = ("reverse", "sequential", "random")


class TurnSample(NamedTuple):
    episode: int  # row of `advantages` (and of the correction M) this sample belongs to
    turn: int     # 0-based turn index t; -1 for a whole-episode sample (the all-turns baselines)
    cost: int     # tokens its forward pass processes: micro-batches are packed by this
    data: Any     # what logprob_fn needs (for an LLM: the prefix ids and the action positions)


def _knob(default, doc):
    return field(default=default, metadata={"help": doc})  # train.py shows `doc` as the flag's --help


@dataclass(kw_only=True)
class SweepConfig:
    """What sweep() does, knob by knob. Built by keyword only, so that a field added anywhere cannot shift the
    values of the others."""
    algo: str = _knob("seeupo", "seeupo, or an all-turns baseline: grpo | gspo | reinforce")
    order: str = _knob("reverse", "seeupo's turn order: reverse (SeeUPO) | sequential | random")
    correction: bool = _knob(True, "scale earlier turns' advantages by the later turns' clipped ratios (M_j)")
    clip_low: float = _knob(0.2, "loss clip: ratio >= 1 - clip_low")
    clip_high: float = _knob(0.2, "loss clip: ratio <= 1 + clip_high")
    correction_clip: float = _knob(0.2, "epsilon_a: each turn's ratio r_j and the correction M_j stay in "
                                        "[1-eps, 1+eps]")
    kl_coef: float = _knob(0.0, "weight of the low-variance KL to the reference policy (train.py: the base model); "
                                "0 skips the reference forward")
    ppo_epochs: int = _knob(1, "passes over each turn's samples")
    minibatches: int = _knob(1, "optimizer steps per pass, per turn for seeupo (the samples are split this many ways)")
    max_grad_norm: float = _knob(1.0, "gradient clipping (global norm)")
    token_budget: int = _knob(16384, "micro-batch size in padded tokens; gradients accumulate across micro-batches")


def _local(x):
    return x  # the single-process reduce: every sum is already global


def grae_advantages(rewards, groups, std_norm=False, batch_norm=True, clip=3.0, leave_one_out=False,
                    reduce_sum=_local):
    """Group-relative advantages (GRAE). rewards, groups: [N] tensors; groups[j] names episode j's task.

    A_j = R_j - mean over j's group (leave_one_out: the mean of the OTHER episodes, RLOO-style), divided
    by the group's std if std_norm; a group whose rewards are all equal gets exactly 0. Then, if
    batch_norm, A /= std(A) over the whole batch (all ranks, via reduce_sum) and A is clipped to [-clip, clip].
    The batch mean of group-relative advantages is 0 by construction, so centering it again is a no-op
    that would only turn the exact zeros of equal-reward groups into rounding noise: it is skipped.
    """
    rewards = rewards.double()
    adv = torch.zeros_like(rewards)
    for g in groups.unique():
        r = rewards[groups == g]
        if len(r) < 2 or bool((r == r[0]).all()):
            continue  # nothing to compare: exactly zero advantage (never NaN)
        a = r - r.mean()
        if leave_one_out:
            a = a * len(r) / (len(r) - 1)  # R_j - mean(others) = G/(G-1) (R_j - mean(all))
        if std_norm:
            a = a / (r.std() + 1e-6)
        adv[groups == g] = a
    if batch_norm:
        n, s2 = reduce_sum(torch.tensor([float(len(adv)), float((adv**2).sum())], dtype=torch.float64))
        std = (s2 / max(n - 1, 1)).sqrt()  # unbiased; mean is 0 (see above)
        if std > 1e-8:
            adv = (adv / std).clamp(-clip, clip)
    return adv.float()


def masked_mean(x, mask):
    return (x * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def sequence_log_ratio(logp, old_logp, mask):
    """log s_j = mean over the action's tokens of [log pi_theta - log pi_old] (length-normalised).
    Clamped to +-20, as verl does, so exp() never overflows on a wild sample."""
    return masked_mean(logp - old_logp, mask).clamp(-20.0, 20.0)


def gspo_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample GSPO loss: -min(s_j A_j, clip(s_j, 1-eps_low, 1+eps_high) A_j).
    Writing s_j = exp(mean_k log-ratio) directly has the same value and gradient as the GSPO token
    form s_jk = sg[s_j] pi(y_k)/sg[pi(y_k)]: d s_j = s_j * mean_k d log pi(y_k)."""
    s = sequence_log_ratio(logp, old_logp, mask).exp()
    return -torch.min(s * adv, s.clamp(1 - clip_low, 1 + clip_high) * adv)


def grpo_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample token-level PPO-clip (GRPO): mean over tokens of -min(r_k A, clip(r_k) A)."""
    r = (logp - old_logp).clamp(-20.0, 20.0).exp()
    a = adv[:, None]
    return masked_mean(-torch.min(r * a, r.clamp(1 - clip_low, 1 + clip_high) * a), mask)


def reinforce_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample REINFORCE with the group baseline: -A_j * mean_k log pi(y_k) (no ratio, no clip)."""
    return -adv * masked_mean(logp, mask)


def correction_update(correction, new_logp, old_logp, mask, eps):
    """SeeUPO's correction after turn t is updated: r_j = clip(s_j, 1-eps, 1+eps) with s_j the sequence
    ratio of turn t's new over old policy, and M_j <- clip(M_j * r_j, 1-eps, 1+eps). Returns (M, r)."""
    r = sequence_log_ratio(new_logp, old_logp, mask).exp().clamp(1 - eps, 1 + eps)
    return (correction * r).clamp(1 - eps, 1 + eps), r


def kl_k3(logp, ref_logp, mask):
    """Low-variance ("k3") estimator of KL(pi_theta || pi_ref) per sample: mean_k [e^d - d - 1], d = ref - logp."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return masked_mean(d.exp() - d - 1, mask)


LOSSES = {"seeupo": gspo_loss, "gspo": gspo_loss, "grpo": grpo_loss, "reinforce": reinforce_loss}


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


def _logprobs(logprob_fn, samples, cfg, device, reference=False):
    """No-grad log-probs of all samples, micro-batched, as one [N, A] tensor and mask, rows in sample order.
    (A rank may have no sample of a turn that others have: then N = 0, still on the right device.)"""
    parts = {}
    with torch.no_grad():
        for mb in micro_batches(range(len(samples)), [s.cost for s in samples], cfg.token_budget):
            lp, m = logprob_fn([samples[i] for i in mb], reference)
            parts.update({i: (lp[k].float(), m[k]) for k, i in enumerate(mb)})
    width = max([lp.shape[0] for lp, _ in parts.values()], default=1)
    logp = torch.zeros(len(samples), width, device=device)
    mask = torch.zeros(len(samples), width, dtype=torch.bool, device=device)
    for i, (lp, m) in parts.items():
        logp[i, : len(lp)], mask[i, : len(m)] = lp, m
    return logp, mask


def sweep(logprob_fn, optimizer, samples, advantages, cfg, num_turns=1, step_seed=0, reduce_sum=_local):
    """ONE training step on a batch of episodes; returns its statistics (over all ranks).

    SeeUPO (algo "seeupo", order "reverse"):
        M_j <- 1
        for t = T-1, ..., 0:                                # the last turn first: backward induction
            S_t     <- the samples of turn t                # episodes without a turn t are not in S_t
            old     <- log pi(a_t | s_t), CURRENT weights   # the later turns are already updated
            A_hat_j <- A_j * M_j                            # M is a constant weight (no gradient)
            ppo_epochs x minibatches optimizer steps on the GSPO loss of turn t only
            r_j     <- clip(exp(mean_k(log pi_new - old)), 1 - eps_a, 1 + eps_a)
            M_j     <- clip(M_j * r_j, 1 - eps_a, 1 + eps_a)
    Order "sequential" / "random" only change the order of t; correction=False keeps M_j = 1. The
    all-turns baselines (grpo, gspo, reinforce) run the same body once, on all samples at once: one
    whole-episode sample per episode (ours), or one per turn (the authors': every turn has its own ratio
    and weighs the same in the mean).

    samples:    list[TurnSample]: per-turn for seeupo; whole-episode (turn -1) or per-turn for the baselines
    advantages: [num_episodes] tensor from grae_advantages (on any device: moved to the parameters')
    num_turns:  the most turns an episode can have (the same on every rank)
    step_seed:  seeds the random order and the minibatch split (the same on every rank)
    reduce_sum: sums a tensor over ranks (identity on one process). Ranks hold different numbers of
                samples of a turn, or none, so DDP's lock-step backward would hang; instead every rank
                takes every optimizer step with gradients summed here (zero where it has no sample).
    """
    assert cfg.algo in ALGOS and cfg.order in ORDERS, (cfg.algo, cfg.order)
    per_turn = cfg.algo == "seeupo"
    assert not per_turn or all(s.turn >= 0 for s in samples), "seeupo takes per-turn samples"
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    device = params[0].device  # the policy's: every tensor of the sweep lives there
    advantages = advantages.to(device)
    correction = torch.ones_like(advantages)  # M_j
    turns = list(range(num_turns)) if per_turn else [-1]  # -1: every sample at once
    if cfg.order == "reverse":
        turns.reverse()
    elif cfg.order == "random":
        random.Random(step_seed).shuffle(turns)
    gen = torch.Generator().manual_seed(step_seed)  # draws the minibatch splits
    steps, turn_stats, applied = [], {}, []  # every optimizer step's Step; per turn: its statistics, the M_j used

    for t in turns:
        S = [s for s in samples if s.turn == t or not per_turn]
        n_global = reduce_sum(torch.tensor([float(len(S))], device=device)).item()
        if n_global == 0:
            continue  # no episode on any rank reached turn t
        ep = torch.tensor([s.episode for s in S], dtype=torch.long, device=device)
        old_logp, mask = _logprobs(logprob_fn, S, cfg, device)
        ref_logp = _logprobs(logprob_fn, S, cfg, device, reference=True)[0] if cfg.kl_coef else None
        adv_hat = advantages[ep] * correction[ep]
        applied.append(correction[ep].clone())
        turn_steps = []
        for _ in range(cfg.ppo_epochs):
            perm = torch.randperm(len(S), generator=gen).tolist()  # each pass splits S into new minibatches
            for k in range(cfg.minibatches):
                turn_steps.append(_optimizer_step(logprob_fn, optimizer, params, S, perm[k :: cfg.minibatches],
                                                  old_logp, ref_logp, adv_hat, cfg, reduce_sum))
        new_logp = _logprobs(logprob_fn, S, cfg, device)[0]
        updated, ratio = correction_update(correction[ep], new_logp, old_logp, mask, cfg.correction_clip)
        if per_turn and cfg.correction:
            correction[ep] = updated
        turn_stats[t] = _turn_stats(turn_steps, ratio, applied[-1], n_global, cfg.ppo_epochs, reduce_sum)
        steps += turn_steps
    return _sweep_stats(steps, turn_stats, applied, reduce_sum, device)


class Step(NamedTuple):
    """What one optimizer step reports: sums over its minibatch's samples on this rank, and its gradient."""
    loss: float       # the per-sample losses (the KL term included)
    kl: float         # the per-sample KL estimates (0 without kl_coef)
    clipped: float    # samples whose sequence ratio lay outside the loss clip range
    grad_norm: float  # the gradient's norm (summed over ranks) before clipping; 0 if not taken
    taken: bool       # False: the gradient was not finite, and the step was skipped


def _optimizer_step(logprob_fn, optimizer, params, S, minibatch, old_logp, ref_logp, adv_hat, cfg, reduce_sum):
    """One optimizer step on the samples S[i], i in minibatch: gradients accumulated over micro-batches, summed
    over ranks. old_logp, ref_logp (or None) and adv_hat have one row per sample of S. Returns its Step."""
    # the loss is a mean over the minibatch's samples on ALL ranks, so divide by the global count
    n_global = reduce_sum(torch.tensor([float(len(minibatch))], device=adv_hat.device)).item()
    for p in params:
        p.grad = torch.zeros_like(p)
    loss_sum = kl_sum = clipped = 0.0
    for micro in micro_batches(minibatch, [s.cost for s in S], cfg.token_budget):
        logp, mask = logprob_fn([S[i] for i in micro])
        logp, old = logp.float(), old_logp[micro, : mask.shape[1]]
        per_sample = LOSSES[cfg.algo](logp, old, mask, adv_hat[micro], cfg.clip_low, cfg.clip_high)
        if ref_logp is not None:
            kl = kl_k3(logp, ref_logp[micro, : mask.shape[1]], mask)
            per_sample = per_sample + cfg.kl_coef * kl
            kl_sum += kl.sum().item()
        (per_sample.sum() / max(n_global, 1)).backward()
        s = sequence_log_ratio(logp.detach(), old, mask).exp()
        loss_sum += per_sample.sum().item()
        clipped += ((s < 1 - cfg.clip_low) | (s > 1 + cfg.clip_high)).sum().item()
    flat = reduce_sum(torch.cat([p.grad.reshape(-1) for p in params]))
    if not torch.isfinite(flat).all():  # never let NaN/inf reach the weights
        warnings.warn("seeupo: non-finite gradient, optimizer step skipped")
        return Step(loss_sum, kl_sum, clipped, grad_norm=0.0, taken=False)
    offset = 0
    for p in params:
        p.grad.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    optimizer.step()
    return Step(loss_sum, kl_sum, clipped, grad_norm, taken=True)


def _turn_stats(steps, ratio, correction, n, ppo_epochs, reduce_sum):
    """Means over all ranks' samples of the turn: loss, KL, clip fraction, r_j and M_j (mean and std)."""
    loss, kl, clipped = sum(s.loss for s in steps), sum(s.kl for s in steps), sum(s.clipped for s in steps)
    sums = reduce_sum(torch.tensor([loss, kl, clipped, ratio.sum().item(), (ratio**2).sum().item(),
                                    correction.sum().item(), (correction**2).sum().item()],
                                   dtype=torch.float64, device=ratio.device)).tolist()
    std = lambda s1, s2: max(s2 / n - (s1 / n) ** 2, 0.0) ** 0.5
    return {"n": int(n), "loss": sums[0] / (n * ppo_epochs), "kl": sums[1] / (n * ppo_epochs),
            "clipfrac": sums[2] / (n * ppo_epochs), "ratio_mean": sums[3] / n, "ratio_std": std(sums[3], sums[4]),
            "correction_mean": sums[5] / n, "correction_std": std(sums[5], sums[6])}


def _sweep_stats(steps, turn_stats, applied, reduce_sum, device):
    """The statistics sweep() returns, over all ranks: per turn (turn_stats), the optimizer steps taken and
    skipped and their mean gradient norm, the M_j that scaled each (episode, turn) sample's advantage (mean and
    std), and the mean KL."""
    applied = torch.cat(applied) if applied else torch.ones(0)
    n, m1, m2 = reduce_sum(torch.tensor([len(applied), applied.sum().item(), (applied**2).sum().item()],
                                        dtype=torch.float64, device=device)).tolist()
    mean = m1 / max(n, 1)
    taken = [s for s in steps if s.taken]
    n_turns = sum(s["n"] for s in turn_stats.values())  # the turn statistics are global already
    return {"turns": turn_stats, "optimizer_steps": len(taken), "skipped_steps": len(steps) - len(taken),
            "grad_norm": sum(s.grad_norm for s in taken) / max(len(taken), 1),
            "correction_mean": mean, "correction_std": max(m2 / max(n, 1) - mean**2, 0.0) ** 0.5,
            "kl": sum(s["kl"] * s["n"] for s in turn_stats.values()) / max(n_turns, 1)}
