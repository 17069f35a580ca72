"""The tabular two-turn problem: the theory of the sweep made runnable, small enough to watch step by step.

Turn 1 picks a branch, turn 2 an action. The safe branch pays 0.5 whatever turn 2 does; the optimal branch
pays 1 only with one turn-2 action, and the start rarely visits it, so it looks worse than the safe branch
until turn 2 has learned it.

Two facts decide what the comparison below can show, both exact here (train_tabular: SGD, one optimizer step
per turn, no gradient clipping) and both checked by tests/test_seeupo.py:
  (a) The all-turns GSPO loss averages each episode's T = 2 turns (its sequence ratio is the mean of their
      log-ratios), so GSPO at lr x moves exactly like a per-turn sweep without the correction at lr x/2.
      The step-matched all-turns update is GSPO at lr x*T; under SGD that IS the loss summed over turns.
  (b) Each turn has its own table of logits, so each turn's loss moves only its own rows: the sweep without
      the correction is the summed all-turns update, whatever the order. Over several optimizer steps per
      turn (ppo_epochs > 1) the sweep still ignores the order and still is the per-turn losses summed, but no
      longer whole-episode GSPO, whose one sequence ratio (and clip) spans both turns' tokens; at the one step
      here that ratio is 1, the clip is idle and the two coincide. So only the correction (and, in an LLM,
      shared weights) can make the order matter.
At a moderate step (SGD lr 0.5, 50 steps) the reverse sweep with its correction reaches the global optimum
more often than the step-matched all-turns update (= the sweep without the correction, any order) and than
the forward order with the correction; GSPO at the same lr, moving half as far, stays on the safe branch.
That lead holds at an equal step, not over every step: without the correction a 10% larger step (lr 0.55)
gets further still. At a small step the columns coincide (the correction acts at second order in the step
size); at a large one every per-turn order gets there and only the speed differs (the numbers, over seeds:
docs/tests.md). Watch it:

    python tabular.py --lr 0.5 1.0 [--steps 50] [--every 5] [--seed 0]
    python tabular.py --lr 0.5 --seeds 8          # the mean over seeds 0-7 after 50 steps, every method

prints, step by step and for each method, turn 1's probability of the rarely visited branch 1, turn 2's
probability of the one action that pays there, and the policy's expected reward (or, with --seeds, the mean
expected reward at the end).

How it connects: `Tabular` is a softmax policy that implements seeupo.sweep()'s logprob_fn in a dozen lines;
`train_tabular` trains it with seeupo.grae_advantages() and seeupo.sweep(), as train.py trains an LLM.
tests/test_seeupo.py asserts the numbers above and uses `Tabular` to test the sweep itself.
"""

import torch

from seeupo import ALL_TURNS, SweepConfig, TurnSample, grae_advantages, sweep
from support.sweep_tools import left_aligned

TURNS = 2  # turn 1 picks a branch, turn 2 an action
PAYOFF = torch.tensor([[0.5, 0.5, 0.5],    # branch 0: safe, 0.5 whatever turn 2 does
                       [0.0, 0.0, 1.0],    # branch 1: the global optimum, but only with turn 2's action 2
                       [0.0, 0.0, 0.0]])


class Tabular(torch.nn.Module):
    """Softmax tables: row 0 is turn 1's policy, row 1+s is turn 2's policy in state s (= turn 1's action).
    The start rarely visits branch 1 (p = 0.11), where turn 2 is still uniform: branch 1 looks worse (1/3)
    than the safe branch (0.5) until turn 2 has learned it."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.cat([torch.tensor([[2.0, 0.0, 0.0]]), torch.zeros(3, 3)]))

    def __call__(self, samples, reference=False):  # seeupo's logprob_fn; sample.data = (rows, actions)
        width = max(len(s.data[0]) for s in samples)
        rows, mask = left_aligned([s.data[0] for s in samples], width, "cpu", dtype=torch.long)
        actions, _ = left_aligned([s.data[1] for s in samples], width, "cpu", dtype=torch.long)
        logp = self.table[rows].log_softmax(-1).gather(-1, actions[..., None])[..., 0]
        return logp * mask, mask

    def value(self):
        p = self.table.detach().softmax(-1)
        return float(p[0] @ (p[1:] * PAYOFF).sum(-1))


def train_tabular(algo="seeupo", order="reverse", correction=True, lr=0.5, minibatches=1, ppo_epochs=1,
                  steps=50, seed=0, episodes=256, group=16, baseline_samples="episode", log=None):
    """Train a fresh Tabular policy: each step samples `episodes` two-turn episodes (groups of `group` share
    a task, for GRAE) and runs one seeupo.sweep(); log(step, policy) after each. Returns the final value.
    baseline_samples: the all-turns baselines train on one sample per episode, or per turn (the authors').
    No gradient clipping: a global-norm clip would rescale one turn's step and both turns' steps differently,
    and facts (a) and (b) of the module docstring would no longer be exact."""
    torch.manual_seed(seed)
    policy = Tabular()
    optimizer = torch.optim.SGD(policy.parameters(), lr=lr)
    cfg = SweepConfig(algo=algo, order=order, correction=correction, minibatches=minibatches,
                      ppo_epochs=ppo_epochs, kl_coef=0.0, max_grad_norm=1e9)
    for step in range(steps):
        with torch.no_grad():
            p = policy.table.softmax(-1)
            a1 = torch.multinomial(p[0], episodes, replacement=True)
            a2 = torch.multinomial(p[1 + a1], 1)[:, 0]
        advantages = grae_advantages(PAYOFF[a1, a2], torch.arange(episodes) // group)
        a1, a2 = a1.tolist(), a2.tolist()
        if cfg.schedule == "sweep" or baseline_samples == "turn":
            samples = [TurnSample(j, 0, 1, ([0], [a1[j]])) for j in range(episodes)]
            samples += [TurnSample(j, 1, 1, ([1 + a1[j]], [a2[j]])) for j in range(episodes)]
        else:
            samples = [TurnSample(j, ALL_TURNS, 2, ([0, 1 + a1[j]], [a1[j], a2[j]])) for j in range(episodes)]
        sweep(policy, optimizer, samples, advantages, cfg, num_turns=TURNS, step_seed=step)
        if log:
            log(step + 1, policy)
    return policy.value()


def mean_value(seeds=range(8), **kwargs):
    """train_tabular's final value, averaged over seeds."""
    return sum(train_tabular(seed=s, **kwargs) for s in seeds) / len(seeds)


# ----------------------------------------------------------------------------- watching it, step by step
# column -> (learning-rate multiplier, train_tabular's arguments). Every per-turn method takes a step of lr x
# on each turn's loss; "gspo, lr x T" takes the same step on the all-turns loss, which averages the T turns.
METHODS = {"reverse (SeeUPO)": (1, {}), "sequential": (1, dict(order="sequential")),
           "random": (1, dict(order="random")), "reverse, M=1": (1, dict(correction=False)),
           "gspo, lr x T": (TURNS, dict(algo="gspo")), "gspo (all at once)": (1, dict(algo="gspo"))}


def watch(lrs, steps, every, seed):
    """The tabular problem step by step: per method, pi1(branch 1), pi2(action 2 | branch 1), expected
    reward."""
    for lr in lrs:
        traces = {}
        for name, (lr_times, kwargs) in METHODS.items():
            trace = traces[name] = {0: _snapshot(Tabular())}
            train_tabular(lr=lr * lr_times, steps=steps, seed=seed,
                          log=lambda k, p, trace=trace: trace.update({k: _snapshot(p)}), **kwargs)
        print(f"\nSGD lr x = {lr}, seed {seed}. Each cell: pi1(branch 1) pi2(a=2|branch 1) -> expected "
              "reward (safe branch 0.5, optimum 1.0)")
        print("step | " + " | ".join(f"{name:^20}" for name in METHODS))
        for k in [k for k in range(steps + 1) if k % every == 0 or k == steps]:
            print(f"{k:4d} | " + " | ".join(f"{p1:.2f} {p2:.2f} -> {v:.2f}".center(20)
                                              for p1, p2, v in (traces[name][k] for name in METHODS)))
        gap = max(abs(a - b) for k in range(steps + 1)
                  for a, b in zip(traces["reverse, M=1"][k], traces["gspo, lr x T"][k]))
        print(f"'reverse, M=1' and 'gspo, lr x T' differ by at most {gap:.0e} in any cell, at any step.")
    print(f"""
Two facts to read the columns by (exact here: SGD, one optimizer step per turn, one table of logits per turn):
(a) GSPO's loss averages each episode's T = {TURNS} turns, so 'gspo (all at once)' at lr x moves exactly like
    'reverse, M=1' at lr x/T (with --lr 0.5 1.0: GSPO's column at lr 1.0 repeats 'reverse, M=1' at lr 0.5).
    'gspo, lr x T' is the step-matched all-turns update: under SGD, the loss summed over the turns.
(b) Each turn's loss moves only its own table, so without the correction the sweep IS the summed all-turns
    update, in whatever order: 'reverse, M=1' equals 'gspo, lr x T' (see above), and the sequential and
    random orders without the correction would too. Only the correction -- and, in an LLM, shared weights --
    can make the order matter.
Every per-turn order first teaches turn 2 to pay in branch 1; turn 1 then follows into branch 1, soonest in
reverse order with the correction, which weights each episode's turn-1 advantage by how much turn 2's update
made that episode's action more likely (M_j). In forward order the correction weights turn 2 by turn 1's
move instead, and lags the uncorrected update. At a small step the columns move alike (the correction acts at
second order in the step size); at larger steps the reverse order leads, until every order finishes. The
lead is at an equal step: without the correction, a 10% larger step (--lr 0.55) gets further still.""")


def _snapshot(policy):
    p = policy.table.detach().softmax(-1)
    return float(p[0, 1]), float(p[2, 2]), policy.value()


def means(lrs, steps, seeds):
    """The expected reward after `steps`, averaged over seeds 0..seeds-1, for every method and lr."""
    print(f"expected reward after {steps} steps, mean over seeds 0-{seeds - 1} "
          "(safe branch 0.5, optimum 1.0)")
    print("lr   | " + " | ".join(f"{name:^20}" for name in METHODS))
    for lr in lrs:
        cells = [mean_value(seeds=range(seeds), lr=lr * lr_times, steps=steps, **kwargs)
                 for lr_times, kwargs in METHODS.values()]
        print(f"{lr:<4g} | " + " | ".join(f"{v:^20.3f}" for v in cells))


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="the tabular two-turn problem, step by step, under each "
                                                 "update method")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.5, 1.0], help="SGD learning rates")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=5, help="print every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=0, help="instead of one seed step by step: the mean "
                        "final value over seeds 0..N-1 (tests/test_seeupo.py's numbers: --seeds 8 --lr 0.5)")
    a = parser.parse_args()
    means(a.lr, a.steps, a.seeds) if a.seeds else watch(a.lr, a.steps, a.every, a.seed)
