"""SeeUPO, the algorithm (arXiv 2602.06554; restated in docs/algorithm.md), and nothing else: what a training
step needs around it (micro-batches, sums over processes, the non-finite guard, statistics) is in
sweep_plumbing.py.

  grae_advantages    A_j = R_j - mean_group(R), optional group-std division, batch normalisation, clip +-3
  the per-sample losses: gspo_loss (sequence-level clip, SeeUPO's), grpo_loss (token-level PPO-clip),
                     reinforce_loss; clip_fractions (where each loss's clip took the gradient away); kl_k3
  correction_update  r_j = clip(s_j), M_j <- clip(M_j r_j): the HAML/HAPPO-style correction
  turn_order         the order of the sweep: reverse (SeeUPO), sequential, or random (the same on every process)
  sweep              ONE training step: the per-turn sweep with the correction M_j, or all turns at once

Every method is two choices (SweepConfig): the SCHEDULE -- "sweep", turn by turn in an order, with or without
the correction, or "all", every turn in one update -- and the per-sample LOSS -- "gspo", "grpo" or
"reinforce". ALGOS names the four presets people use (seeupo = sweep + gspo; gspo, grpo and reinforce = all
turns at once with that loss); the token-level sweep is SweepConfig(loss="grpo").

The sweep never sees a model. It reaches the policy through one callable,

    logprob_fn(samples: list[TurnSample], reference: bool = False) -> (token_logprobs [B, A], action_mask [B, A])

that returns, for each sample, the log-probs of its action tokens under the current policy (or, with
reference=True, under the reference policy), left-aligned in a float tensor with a bool mask.
`rollout.Policy.turn_logprobs` implements it for an LLM (turn t's forward runs on the prefix up to the end of
turn t only); `tabular.Tabular` for a tabular softmax policy. train.py builds SweepConfig from its flags.
"""

import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from sweep_plumbing import Plumbing, local_sum

ALGOS = {"seeupo": ("sweep", "gspo"), "gspo": ("all", "gspo"), "grpo": ("all", "grpo"),
         "reinforce": ("all", "reinforce")}  # name -> (schedule, loss)
ORDERS = ("reverse", "sequential", "random")
ALL_TURNS = -1  # TurnSample.turn of a whole-episode sample, and the one "turn" of the all-turns schedule


class TurnSample(NamedTuple):
    episode: int  # row of `advantages` (and of the correction M) this sample belongs to
    turn: int     # 0-based turn index t; ALL_TURNS for a whole-episode sample (the all-turns baselines)
    cost: int     # tokens its forward pass processes: micro-batches are packed by this
    data: Any     # what logprob_fn needs (for an LLM: rollout.Actions, the prefix and the tokens to score)
    sampled: Any = None  # log pi of its action tokens when they were sampled (a list), or None: only for statistics


def _knob(default, doc):
    return field(default=default, metadata={"help": doc})  # train.py shows `doc` as the flag's --help


@dataclass(kw_only=True)
class SweepConfig:
    """What sweep() does, knob by knob. Built by keyword only, so that a field added anywhere cannot shift the
    values of the others. SweepConfig(**preset("gspo")) is the GSPO baseline."""
    schedule: str = _knob("sweep", "sweep: turn by turn in --order (SeeUPO) | all: every turn in one update")
    loss: str = _knob("gspo", "per-sample loss: gspo (sequence-level clip) | grpo (token-level clip) | reinforce")
    order: str = _knob("reverse", "the sweep's turn order: reverse (SeeUPO) | sequential | random")
    correction: bool = _knob(True, "scale earlier turns' advantages by the later turns' clipped ratios (M_j)")
    clip_low: float = _knob(0.2, "loss clip: ratio >= 1 - clip_low")
    clip_high: float = _knob(0.2, "loss clip: ratio <= 1 + clip_high")
    correction_clip: float = _knob(0.2, "epsilon_a: each turn's ratio r_j and the correction M_j stay in "
                                        "[1-eps, 1+eps]")
    kl_coef: float = _knob(0.0, "weight of the low-variance KL to the reference policy (train.py: the base model); "
                                "0 skips the reference forward")
    ppo_epochs: int = _knob(1, "passes over each turn's samples")
    minibatches: int = _knob(1, "optimizer steps per pass, per turn in the sweep (the samples are split this many ways)")
    max_grad_norm: float = _knob(1.0, "gradient clipping (global norm)")
    token_budget: int = _knob(16384, "micro-batch size in padded tokens; gradients accumulate across micro-batches")


def preset(algo):
    """The SweepConfig fields of a preset name: preset("seeupo") == {"schedule": "sweep", "loss": "gspo"}."""
    schedule, loss = ALGOS[algo]
    return {"schedule": schedule, "loss": loss}


def grae_advantages(rewards, groups, std_norm=False, batch_norm=True, clip=3.0, leave_one_out=False,
                    reduce_sum=local_sum):
    """Group-relative advantages (GRAE). rewards, groups: [N] tensors; groups[j] names episode j's task.

    A_j = R_j - mean over j's group (leave_one_out: the mean of the OTHER episodes, RLOO-style), divided
    by the group's std if std_norm; a group whose rewards are all equal gets exactly 0. Then, if
    batch_norm, A /= std(A) over the whole batch (all processes, via reduce_sum) and A is clipped to
    [-clip, clip]. The batch mean of group-relative advantages is 0 by construction, so centering it again is
    a no-op that would only turn the exact zeros of equal-reward groups into rounding noise: it is skipped.
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


# ----------------------------------------------------------------------------- the losses of one turn
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


LOSSES = {"gspo": gspo_loss, "grpo": grpo_loss, "reinforce": reinforce_loss}


def clip_fractions(loss, logp, old_logp, mask, adv, clip_low, clip_high):
    """Per sample, how much of it the clip took out of the gradient, on each side (TRL's clip_ratio/low and
    /high): the ratio below 1 - clip_low where A < 0, above 1 + clip_high where A > 0. gspo clips the sequence
    ratio (0 or 1 per sample), grpo each token's ratio (the share of the sample's tokens); reinforce has no clip
    (None)."""
    if loss == "reinforce":
        return None
    if loss == "gspo":
        ratio, where = sequence_log_ratio(logp, old_logp, mask).exp()[:, None], torch.ones_like(adv[:, None])
    else:
        ratio, where = (logp - old_logp).clamp(-20.0, 20.0).exp(), mask
    low = (ratio < 1 - clip_low) & (adv[:, None] < 0)
    high = (ratio > 1 + clip_high) & (adv[:, None] > 0)
    return masked_mean(low.float(), where), masked_mean(high.float(), where)


def kl_k3(logp, ref_logp, mask):
    """Low-variance ("k3") estimator of KL(pi_theta || pi_ref) per sample: mean_k [e^d - d - 1], d = ref - logp."""
    d = (ref_logp - logp).clamp(-20.0, 20.0)
    return masked_mean(d.exp() - d - 1, mask)


# ----------------------------------------------------------------------------- the correction and the sweep
def correction_update(correction, new_logp, old_logp, mask, eps):
    """SeeUPO's correction after turn t is updated: r_j = clip(s_j, 1-eps, 1+eps) with s_j the sequence
    ratio of turn t's new over old policy, and M_j <- clip(M_j * r_j, 1-eps, 1+eps). Returns (M, r)."""
    r = sequence_log_ratio(new_logp, old_logp, mask).exp().clamp(1 - eps, 1 + eps)
    return (correction * r).clamp(1 - eps, 1 + eps), r


def turn_order(order, num_turns, step_seed):
    """The turns 0..num_turns-1 in the order the sweep updates them. "random" is drawn from step_seed alone,
    never from a global generator, so that every process updates the turns in the same order."""
    turns = list(range(num_turns))
    if order == "reverse":
        turns.reverse()
    elif order == "random":
        random.Random(step_seed).shuffle(turns)
    return turns


def sweep(logprob_fn, optimizer, samples, advantages, cfg, num_turns=1, step_seed=0, reduce_sum=local_sum):
    """ONE training step on a batch of episodes; returns its statistics (over all processes).

    SeeUPO (schedule "sweep", order "reverse", loss "gspo"):
        M_j <- 1
        for t = T-1, ..., 0:                                # the last turn first: backward induction
            S_t     <- the samples of turn t                # episodes without a turn t are not in S_t
            old     <- log pi(a_t | s_t), CURRENT weights   # the later turns are already updated
            A_hat_j <- A_j * M_j                            # M is a constant weight (no gradient)
            ppo_epochs x minibatches optimizer steps on the loss of turn t only
            r_j     <- clip(exp(mean_k(log pi_new - old)), 1 - eps_a, 1 + eps_a)
            M_j     <- clip(M_j * r_j, 1 - eps_a, 1 + eps_a)
    Schedule "all" runs the same body once, on every sample (one whole-episode sample per episode, or one per
    turn: the authors' baselines), with M_j = 1.

    samples:    list[TurnSample] (per turn for the sweep; whole-episode or per turn for "all")
    advantages: [num_episodes] tensor from grae_advantages (on any device: moved to the parameters')
    optimizer:  a torch optimizer, or a list of one per turn index (one set of moments per turn); "all" takes one
    num_turns:  the most turns an episode can have (the same on every process)
    step_seed:  seeds the random order and the minibatch splits (the same on every process)
    reduce_sum: sums a tensor over processes (identity on one); see sweep_plumbing.Plumbing
    """
    assert cfg.schedule in ("sweep", "all") and cfg.loss in LOSSES and cfg.order in ORDERS, cfg
    per_turn = cfg.schedule == "sweep"
    assert not per_turn or all(0 <= s.turn < num_turns for s in samples), \
        f"the sweep takes per-turn samples of turns 0..{num_turns - 1} (num_turns={num_turns})"
    run = Plumbing(logprob_fn, optimizer, cfg, reduce_sum, step_seed)  # micro-batches, sums, guard, statistics
    A = advantages.to(run.device)
    M = torch.ones_like(A)  # M_j, the correction

    for t in turn_order(cfg.order, num_turns, step_seed) if per_turn else [ALL_TURNS]:
        S = [s for s in samples if s.turn == t or not per_turn]
        if run.count(S) == 0:
            continue  # no episode on any process reached turn t
        j = torch.tensor([s.episode for s in S], dtype=torch.long, device=run.device)  # each sample's episode
        old, mask = run.logprobs(S)  # with the current weights: the later turns are already updated
        ref = run.logprobs(S, reference=True)[0] if cfg.kl_coef else None
        M_j = M[j]  # this turn's correction of each sample's episode (a copy: M[j] gathers)
        A_hat = A[j] * M_j  # a constant here: no gradient flows through M

        def loss(logp, rows):  # turn t's per-sample loss on S[rows], and what to report of it
            m, o = mask[rows, : logp.shape[1]], old[rows, : logp.shape[1]]
            per_sample = LOSSES[cfg.loss](logp, o, m, A_hat[rows], cfg.clip_low, cfg.clip_high)
            kl = kl_k3(logp, ref[rows, : logp.shape[1]], m) if ref is not None else None
            clipped = clip_fractions(cfg.loss, logp.detach(), o, m, A_hat[rows], cfg.clip_low, cfg.clip_high)
            return (per_sample if kl is None else per_sample + cfg.kl_coef * kl), kl, clipped

        for rows in run.minibatches(len(S)):  # ppo_epochs passes, each split into minibatches
            run.optimizer_step(t, S, rows, loss)
        new = run.logprobs(S)[0]
        M_next, r = correction_update(M_j, new, old, mask, cfg.correction_clip)  # r_j; M_j <- clip(M_j r_j)
        if per_turn and cfg.correction:
            M[j] = M_next  # the turns updated after this one see how far this one moved
        run.end_turn(t, S, M_j, r, new, mask)
    return run.statistics()
