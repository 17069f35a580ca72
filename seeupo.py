"""SeeUPO, the algorithm (arXiv 2602.06554; restated in docs/algorithm.md), and nothing else: the mechanics of
a training step (micro-batches by token budget, sums over processes, the non-finite guard) and the recorder of
its statistics are in support/sweep_tools.py.

  SweepConfig        the method, knob by knob; ALGOS: the presets --algo names
  grae_advantages    A_j = R_j - baseline (the group's mean, or the mean of the others), optional group-std
                     division, batch normalisation, clip +-3
  the per-sample losses: gspo_loss (sequence-level clip, SeeUPO's), grpo_loss (token-level PPO-clip),
                     reinforce_loss; clip_fractions (where each loss's clip took the gradient away); kl_k3
  correction_update  r_j = clip(s_j), M_j <- clip(M_j r_j): the HAML/HAPPO-style correction
  turn_order         the order of the sweep: reverse (SeeUPO), sequential, or random (the same on every
                     process)
  sweep              ONE training step: the per-turn sweep with the correction M_j, or all turns at once; its
                     optimizer steps (zero_grad, backward, the sum over processes, clip, step) written out

A method is three orthogonal choices: the SCHEDULE -- "sweep", turn by turn in an order, with or without the
correction, or "all", every turn in one update -- the per-sample LOSS -- "gspo", "grpo" or "reinforce" -- and
GRAE's BASELINE -- "mean" or "loo". ALGOS names the four presets people use (seeupo = sweep + gspo; gspo,
grpo = all turns at once with that loss; reinforce = all turns, REINFORCE, leave-one-out); any knob given
explicitly wins over its preset, so the token-level sweep is SweepConfig(loss="grpo").

The sweep never sees a model. It reaches the policy through one callable,

    logprob_fn(samples: list[TurnSample], reference: bool = False)
        -> (token_logprobs [B, A], action_mask [B, A])

that returns, for each sample, the log-probs of its action tokens under the current policy (or, with
reference=True, under the reference policy), left-aligned in a float tensor with a bool mask.
`rollout.Policy.turn_logprobs` implements it for an LLM (turn t's forward runs on the prefix up to the end
of turn t only); `tabular.Tabular` for a tabular softmax policy. train.py builds SweepConfig from its flags.
"""

import random
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import torch

from support.sweep_tools import (SweepStats, global_count, gradients_finite, local_sum, micro_batches,
                                 minibatches, no_grad_logprobs, sampled_logprobs, sum_gradients)

# --algo: a preset of the three knobs that name a method; a knob given explicitly wins over its preset
ALGOS = {"seeupo": dict(schedule="sweep", loss="gspo", baseline="mean"),
         "gspo": dict(schedule="all", loss="gspo", baseline="mean"),
         "grpo": dict(schedule="all", loss="grpo", baseline="mean"),
         "reinforce": dict(schedule="all", loss="reinforce", baseline="loo")}
SCHEDULES, BASELINES, ORDERS = ("sweep", "all"), ("mean", "loo"), ("reverse", "sequential", "random")
LOSS_NAMES = ("gspo", "grpo", "reinforce")  # the per-sample losses below (LOSSES)
ALL_TURNS = -1  # TurnSample.turn of a whole-episode sample, and the one "turn" of the all-turns schedule
# every log-ratio is clamped to +-20, as verl does, so exp() never overflows on a wild sample
LOG_RATIO_CLAMP = 20.0


class TurnSample(NamedTuple):
    episode: int  # row of `advantages` (and of the correction M) this sample belongs to
    turn: int     # 0-based turn index t; ALL_TURNS for a whole-episode sample (the all-turns baselines)
    cost: int     # tokens its forward pass processes: micro-batches are packed by this
    data: Any     # what logprob_fn needs (for an LLM: rollout.Actions, the prefix and the tokens to score)
    sampled: Any = None  # log pi of its action tokens at sampling (a list), or None: only for statistics


def knob(default, help):
    """A dataclass field with its --help (train.py's flags are the fields of these dataclasses)."""
    return field(default=default, metadata={"help": help})


@dataclass(kw_only=True)
class SweepConfig:
    """The method, knob by knob: its advantages, its schedule and loss, and what one sweep() does. Every
    default lives here once (train.Args inherits these fields as its flags). Built by keyword only, so that a
    field added anywhere cannot shift the values of the others. SweepConfig(algo="gspo") is the GSPO
    baseline."""
    algo: Literal[tuple(ALGOS)] = knob("seeupo", "a preset of --schedule, --loss and --baseline "
                                       "(seeupo.ALGOS): seeupo = sweep + gspo + mean; gspo, grpo = all + "
                                       "that loss + mean; reinforce = all + reinforce + loo. Any of the "
                                       "three given explicitly wins")
    schedule: Literal[("", *SCHEDULES)] = knob("", "sweep: turn by turn in --order (SeeUPO) | all: every "
                                                   "turn in one update ('': --algo's)")
    loss: Literal[("", *LOSS_NAMES)] = knob("", "per-sample loss: gspo (sequence-level clip) | grpo "
                                                "(token-level clip) | reinforce ('': --algo's)")
    baseline: Literal[("", *BASELINES)] = knob("", "GRAE's baseline: mean (the group's) | loo (the mean of "
                                                   "the others, RLOO) ('': --algo's)")
    std_norm: bool = knob(False, "divide advantages by their group's std (the authors: on)")
    batch_norm: bool = knob(True, "normalise advantages over the batch (unit std, clipped to +-3)")
    order: Literal[ORDERS] = knob("reverse", "the sweep's turn order: reverse (SeeUPO) | sequential | random")
    correction: bool = knob(True, "scale earlier turns' advantages by the later turns' clipped ratios (M_j); "
                                  "--no_correction: off")
    clip_low: float = knob(0.2, "loss clip epsilon: ratio >= 1 - clip_low")
    clip_high: float = knob(0.2, "loss clip epsilon: ratio <= 1 + clip_high")
    correction_clip: float = knob(0.2, "epsilon_a: each turn's ratio r_j and the correction M_j stay in "
                                       "[1-eps, 1+eps]")
    kl_coef: float = knob(0.05, "weight of the k3 KL to the reference policy (train.py: the base model); 0 "
                                "skips the reference forward (the authors: 0.002)")
    ppo_epochs: int = knob(2, "passes over each turn's samples (the authors: 1)")
    minibatches: int = knob(4, "optimizer steps per pass, per turn in the sweep (the samples are split this "
                               "many ways; the authors: 1)")
    max_grad_norm: float = knob(1.0, "gradient clipping (global norm)")
    token_budget: int = knob(16384, "micro-batch size in padded tokens; gradients accumulate across "
                                    "micro-batches")

    def __post_init__(self):
        if self.algo not in ALGOS:
            raise ValueError(f"--algo {self.algo!r}: choose one of {', '.join(ALGOS)}")
        for name, value in ALGOS[self.algo].items():  # the preset fills what was not given
            setattr(self, name, getattr(self, name) or value)
        for name, allowed in (("schedule", SCHEDULES), ("loss", LOSS_NAMES), ("baseline", BASELINES),
                              ("order", ORDERS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} {getattr(self, name)!r}: choose one of {', '.join(allowed)}")
        if self.schedule == "all" and (self.order != "reverse" or not self.correction):
            raise ValueError("--order and --no_correction belong to --schedule sweep (all turns at once have "
                             "no order and no correction)")


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
    """log s_j = mean over the action's tokens of [log pi_theta - log pi_old] (length-normalised), clamped."""
    return masked_mean(logp - old_logp, mask).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


def gspo_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample GSPO loss: -min(s_j A_j, clip(s_j, 1-eps_low, 1+eps_high) A_j).
    Writing s_j = exp(mean_k log-ratio) directly has the same value and gradient as the GSPO token
    form s_jk = sg[s_j] pi(y_k)/sg[pi(y_k)]: d s_j = s_j * mean_k d log pi(y_k)."""
    s = sequence_log_ratio(logp, old_logp, mask).exp()
    return -torch.min(s * adv, s.clamp(1 - clip_low, 1 + clip_high) * adv)


def grpo_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample token-level PPO-clip (GRPO): mean over tokens of -min(r_k A, clip(r_k) A)."""
    r = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp()
    a = adv[:, None]
    return masked_mean(-torch.min(r * a, r.clamp(1 - clip_low, 1 + clip_high) * a), mask)


def reinforce_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    """Per-sample REINFORCE with the group baseline: -A_j * mean_k log pi(y_k) (no ratio, no clip)."""
    return -adv * masked_mean(logp, mask)


LOSSES = {"gspo": gspo_loss, "grpo": grpo_loss, "reinforce": reinforce_loss}


def clip_fractions(loss, logp, old_logp, mask, adv, clip_low, clip_high):
    """Per sample, how much of it the clip took out of the gradient, on each side (TRL's clip_ratio/low and
    /high): the ratio below 1 - clip_low where A < 0, above 1 + clip_high where A > 0. gspo clips the sequence
    ratio (0 or 1 per sample), grpo each token's ratio (the share of the sample's tokens); reinforce has no
    clip (None)."""
    if loss == "reinforce":
        return None
    if loss == "gspo":
        ratio, where = sequence_log_ratio(logp, old_logp, mask).exp()[:, None], torch.ones_like(adv[:, None])
    else:
        ratio, where = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP).exp(), mask
    low = (ratio < 1 - clip_low) & (adv[:, None] < 0)
    high = (ratio > 1 + clip_high) & (adv[:, None] > 0)
    return masked_mean(low.float(), where), masked_mean(high.float(), where)


def kl_k3(logp, ref_logp, mask):
    """Low-variance ("k3") estimator of KL(pi_theta || pi_ref) per sample: mean_k [e^d - d - 1],
    d = ref - logp."""
    d = (ref_logp - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
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
    optimizer:  a torch optimizer (or a list of one), or a list of one per turn index (the sweep only)
    num_turns:  the most turns an episode can have (the same on every process)
    step_seed:  seeds the random order and the minibatch splits (the same on every process)
    reduce_sum: sums a tensor over processes (identity on one); see support/sweep_tools.py
    """
    per_turn = cfg.schedule == "sweep"
    optimizers = optimizer if isinstance(optimizer, list) else [optimizer]
    assert per_turn or len(optimizers) == 1, "the all-turns schedule takes one optimizer, not one per turn"
    assert not per_turn or all(0 <= s.turn < num_turns for s in samples), \
        f"the sweep takes per-turn samples of turns 0..{num_turns - 1} (num_turns={num_turns})"
    params = [p for group in optimizers[0].param_groups for p in group["params"] if p.requires_grad]
    device = params[0].device  # the policy's: every tensor of the sweep lives there
    splits = torch.Generator().manual_seed(step_seed)  # draws the minibatch splits
    stats = SweepStats(cfg.loss, cfg.ppo_epochs, reduce_sum, device)
    A = advantages.to(device)
    M = torch.ones_like(A)  # M_j, the correction

    for t in turn_order(cfg.order, num_turns, step_seed) if per_turn else [ALL_TURNS]:
        S = [s for s in samples if s.turn == t or not per_turn]
        if global_count(S, reduce_sum, device) == 0:
            continue  # no episode on any process reached turn t
        # each sample's episode
        episode = torch.tensor([s.episode for s in S], dtype=torch.long, device=device)
        # later turns already updated
        old_logp, mask = no_grad_logprobs(logprob_fn, S, cfg.token_budget, device)
        ref_logp = (no_grad_logprobs(logprob_fn, S, cfg.token_budget, device, reference=True)[0]
                    if cfg.kl_coef else None)
        M_S = M[episode]  # this turn's correction of each sample's episode (a copy: M[episode] gathers)
        A_hat = A[episode] * M_S  # a constant here: no gradient flows through M
        # turn t's own moments, or the shared ones
        opt = optimizers[t] if len(optimizers) > 1 else optimizers[0]

        for rows in minibatches(len(S), cfg.ppo_epochs, cfg.minibatches, splits):
            opt.zero_grad()
            # the loss is a mean over the minibatch on ALL processes
            n = global_count(rows, reduce_sum, device)
            for micro in micro_batches(rows, [s.cost for s in S], cfg.token_budget):  # gradients accumulate
                logp = logprob_fn([S[i] for i in micro])[0].float()  # [b, a]: with the gradient
                width = logp.shape[1]
                micro_mask, micro_old, micro_adv = mask[micro, :width], old_logp[micro, :width], A_hat[micro]
                per_sample = LOSSES[cfg.loss](logp, micro_old, micro_mask, micro_adv, cfg.clip_low,
                                              cfg.clip_high)
                kl = kl_k3(logp, ref_logp[micro, :width], micro_mask) if ref_logp is not None else None
                loss = per_sample if kl is None else per_sample + cfg.kl_coef * kl
                (loss.sum() / n).backward()
                clipped = clip_fractions(cfg.loss, logp.detach(), micro_old, micro_mask, micro_adv,
                                         cfg.clip_low, cfg.clip_high)
                stats.record(t, loss, kl, clipped)
            # over processes: each holds its own samples (why not DDP: sweep_tools)
            sum_gradients(params, reduce_sum)
            if not gradients_finite(params):  # a NaN or inf never reaches the weights: the step is skipped
                stats.skipped_step()
                continue
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            stats.optimizer_step(grad_norm)
            opt.step()

        new_logp = no_grad_logprobs(logprob_fn, S, cfg.token_budget, device)[0]
        # r_j; M_j <- clip(M_j r_j)
        M_next, r = correction_update(M_S, new_logp, old_logp, mask, cfg.correction_clip)
        if per_turn and cfg.correction:
            M[episode] = M_next  # the turns updated after this one see how far this one moved
        sampled = sampled_logprobs(S, new_logp.shape[1], device)  # log pi at sampling time, if samples say
        stats.end_turn(t, S, M_S, r, kl_k3(new_logp, sampled, mask) if sampled is not None else None)
    return stats.summary()
