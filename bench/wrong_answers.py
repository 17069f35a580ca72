"""Do the exercises' tests catch wrong answers? (For instructors; never run by CI.)

    python bench/wrong_answers.py            # every answer below, in a scratch copy of the project

For each graded exercise of EXERCISES.md, this plants answers in a scratch copy of the project -- the right one
and plausible wrong ones -- and runs the command EXERCISES.md gives for that exercise. The right answer must
pass and every wrong one must fail; the table it prints is the one in docs/tests.md ("Grading the exercises").
An answer replaces one top-level function of a file (or, for exercise 4, adds an environment to envs.ENVS).
"""

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from support.course import plant_function  # noqa: E402  (the one home of planting and blanking)

FAST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "not slow"]

# ----------------------------------------------------------------------------- exercise 1: grae_advantages
GRAE = '''
def grae_advantages(rewards, groups, std_norm=False, batch_norm=True, clip=3.0, leave_one_out=False,
                    reduce_sum=local_sum):
    rewards = rewards.double()
    adv = torch.zeros_like(rewards)
    for g in groups.unique():
        r = rewards[groups == g]
        if len(r) < 2 or bool((r == r[0]).all()):
            continue
        a = r - r.mean()
        if leave_one_out:
            a = a * len(r) / (len(r) - 1)
        if std_norm:
            a = a / (r.std(correction=GROUP_DOF) + 1e-6)
        adv[groups == g] = a
    if batch_norm:
        n, s2 = reduce_sum(torch.tensor([float(len(adv)), float((adv**2).sum())], dtype=torch.float64))
        std = (s2 / max(n - BATCH_DOF, 1)).sqrt()
        if std > 1e-8:
            adv = CLIPPED
    return adv.float()
'''


def grae(group_dof=1, batch_dof=1, clipped=True, loo=True):
    text = GRAE.replace("GROUP_DOF", str(group_dof)).replace("BATCH_DOF", str(batch_dof))
    text = text.replace("CLIPPED", "(adv / std).clamp(-clip, clip)" if clipped else "adv / std")
    return text if loo else text.replace("a = a * len(r) / (len(r) - 1)", "pass")


# ----------------------------------------------------------------------------- exercise 2: correction_update
def correction(log_ratio="masked_mean(new_logp - old_logp, mask)", clip_m=True, clip_r_first=True):
    r = f"torch.exp({log_ratio})"
    return f'''
def correction_update(correction, new_logp, old_logp, mask, eps):
    s = {r}
    r = s.clamp(1 - eps, 1 + eps)
    m = correction * ({"r" if clip_r_first else "s"})
    return ({"m.clamp(1 - eps, 1 + eps)" if clip_m else "m"}), r
'''


# ----------------------------------------------------------------------------- exercise 3: turn_order
def order(random_draw="random.Random(step_seed).shuffle(turns)", reverse="turns.reverse()"):
    return f'''
def turn_order(order, num_turns, step_seed):
    turns = list(range(num_turns))
    if order == "reverse":
        {reverse}
    elif order == "random":
        {random_draw}
    return turns
'''


# ----------------------------------------------------------------------------- exercise 5: grpo_loss
def grpo(ratio="(logp - old_logp).clamp(-20.0, 20.0).exp()", objective="torch.min(r * a, r.clamp(1 - clip_low, 1 + clip_high) * a)",
         mean="masked_mean(-OBJ, mask)"):
    return f'''
def grpo_loss(logp, old_logp, mask, adv, clip_low, clip_high):
    r = {ratio}
    a = adv[:, None]
    return {mean.replace("OBJ", objective)}
'''


# ----------------------------------------------------------------------------- exercise 6: step_advantages
STEP_RIGHT = '''
def step_advantages(states, groups, rewards):
    """GiGPO's step-level advantages: a turn's return minus the mean return of its step group (the same task
    group, the same state)."""
    returns = {}
    for j, turns in enumerate(states):
        for state in turns:
            returns.setdefault((groups[j], state), []).append(rewards[j])
    return {(j, t): rewards[j] - sum(returns[groups[j], s]) / len(returns[groups[j], s])
            for j, turns in enumerate(states) for t, s in enumerate(turns)}
'''
STEP_BY_TURN = STEP_RIGHT.replace("(groups[j], state)", "(groups[j], t)").replace("for state in turns", "for t, state in enumerate(turns)").replace("returns[groups[j], s]", "returns[groups[j], t]")
STEP_NO_GROUP = STEP_RIGHT.replace("(groups[j], state)", "state").replace("returns[groups[j], s]", "returns[s]")
STEP_NORMALISED = STEP_RIGHT.replace(
    "rewards[j] - sum(returns[groups[j], s]) / len(returns[groups[j], s])",
    "(rewards[j] - sum(returns[groups[j], s]) / len(returns[groups[j], s])) / (torch.tensor(returns[groups[j], s]).std() + 1e-6)")

# ----------------------------------------------------------------------------- exercise 4: a new environment
DOOR = '''

class DoorEnv:
    """Three doors, one opens; turn 1 `key()` returns which one, turn 2 `open(N)`."""
    name = "door"
    tools = None
    system = "key() tells which door opens; open(N) opens door N."

    def __init__(self, max_turns=2):
        self.max_turns = max_turns

    @staticmethod
    def tasks(split, n=None, seed=0):
        def draw(rng):
            door, decoy = rng.randrange(3), rng.randrange(10)
            return {"door": door, "decoy": decoy}, HELD_OUT
        return drawn_tasks("door", draw, split, n, seed)

    def reset(self, task):
        self.task, self.turn, self.keyed = task, 0, False
        return [{"role": "system", "content": self.system}, {"role": "user", "content": f"Decoy {task['decoy']}."}]

    def step(self, text):
        self.turn += 1
        call = CALL.match(text)
        name, arg = call.groups() if call else (None, None)
        if name == "key" and arg == "":
            self.keyed, reply, info, win = True, f"door {self.task['door']}", {}, None
        elif name == "open" and arg in ("0", "1", "2"):
            win, reply, info = PARSE == self.task["door"], "", {}
            reply = "open" if win else "locked"
        else:
            reply, info, win = "bad call; use key(), then open(N)", {"malformed": True}, None
        if win is None and self.turn < self.max_turns:
            return user_message(reply), False, 0.0, info
        return user_message(reply), True, float(bool(win)), {**info, SUCCESS: bool(win)}

    def random_action(self, rng):
        return "key()" if self.turn == 0 else f"open({rng.randrange(3)})"

    def oracle_action(self):
        return f"open({self.task['door']})" if self.turn else "key()"

    random_success = RANDOM
    optimal_success = 1.0


ENVS["door"] = DoorEnv
'''


def door(held_out="decoy == 0", parse="int(arg)", success='"success"', random_rate="1 / 3"):
    return (DOOR.replace("HELD_OUT", held_out).replace("PARSE", parse).replace("SUCCESS", success)
            .replace("RANDOM", random_rate))


# ----------------------------------------------------------------------------- the answers and their commands
SEEUPO_TESTS = [*FAST, "tests/test_seeupo.py"]
EXERCISES = [
    (1, "seeupo.py", "grae_advantages", [*SEEUPO_TESTS, "-k", "grae"], [
        ("right", grae()),
        ("group std with the biased (population) estimator", grae(group_dof=0)),
        ("batch std over n instead of n - 1", grae(batch_dof=0)),
        ("a batch baseline instead of the group mean", grae().replace("a = r - r.mean()", "a = r - rewards.mean()")),
        ("clipped before the division by the batch std", grae(clipped=False).replace("        n, s2 = reduce_sum", "        adv = adv.clamp(-clip, clip)\n        n, s2 = reduce_sum")),
        ("no clip at +-3", grae(clipped=False)),
        ("leave-one-out as the plain group mean", grae(loo=False))]),
    (2, "seeupo.py", "correction_update", [*SEEUPO_TESTS, "-k", "correction"], [
        ("right", correction()),
        ("token log-ratios summed, not averaged", correction(log_ratio="((new_logp - old_logp) * mask).sum(-1)")),
        ("the mean over every position, padding too", correction(log_ratio="(new_logp - old_logp).mean(-1)")),
        ("the arithmetic mean of the token ratios", correction(log_ratio="masked_mean((new_logp - old_logp).exp(), mask).log()")),
        ("M_j not clipped after the product", correction(clip_m=False)),
        ("M_j multiplied by the unclipped ratio", correction(clip_r_first=False)),
        ("the ratio inverted (old over new)", correction(log_ratio="masked_mean(old_logp - new_logp, mask)"))]),
    (3, "seeupo.py", "turn_order", [*SEEUPO_TESTS, "-k", "turn_order or reverse_sweep"], [
        ("right", order()),
        ("random from the global generator", order(random_draw="random.shuffle(turns)")),
        ("random from torch's global generator", order(random_draw="turns = torch.randperm(num_turns).tolist()")),
        ("random from fresh entropy each call", order(random_draw="random.Random().shuffle(turns)")),
        ("random drawn once, not per step", order(random_draw="random.Random(0).shuffle(turns)")),
        ("reverse and sequential swapped", order().replace('if order == "reverse":', 'if order == "sequential":'))]),
    (4, "envs.py", None, [*FAST, "tests/test_envs.py"], [
        ("right", door()),
        ("no info['success'] at the end", door(success='"won"')),
        ("open(x) raises", door().replace('elif name == "open" and arg in ("0", "1", "2"):', 'elif name == "open":')),
        ("train and test share tasks", door(held_out="rng.random() < 0.1")),
        ("tasks from the global generator", door().replace("door, decoy = rng.randrange(3), rng.randrange(10)",
                                                           "door, decoy = random.randrange(3), random.randrange(10)")),
        ("a wrong random-policy rate", door(random_rate="1 / 2"))]),
    (5, "seeupo.py", "grpo_loss", [*SEEUPO_TESTS, "-k", "grpo or token_level"], [
        ("right", grpo()),
        ("one sequence ratio for every token", grpo(ratio="sequence_log_ratio(logp, old_logp, mask).exp()[:, None]")),
        ("clip without the min", grpo(objective="r.clamp(1 - clip_low, 1 + clip_high) * a")),
        ("the ratio never clipped", grpo(objective="r * a")),
        ("the mean over every position, padding too", grpo(mean="(-OBJ).mean(-1)"))]),
    (6, "seeupo.py", "step_advantages", [*SEEUPO_TESTS, "-k", "step_level"], [
        ("right", STEP_RIGHT),
        ("step groups by turn index, not by state", STEP_BY_TURN),
        ("step groups across task groups", STEP_NO_GROUP),
        ("divided by the step group's std", STEP_NORMALISED)]),
]


def main():
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for number, file, function, command, answers in EXERCISES:
            for label, code in answers:
                copy = os.path.join(scratch, "project")
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "results", "__pycache__"))
                path = os.path.join(copy, file)
                planted = plant_function(open(path).read(), function, code)
                open(path, "w").write(planted)
                out = subprocess.run(command, cwd=copy, capture_output=True, text=True)
                failed = [line.split("::")[-1].split(" ")[0] for line in out.stdout.splitlines() if line.startswith("FAILED")]
                passed = out.returncode == 0
                ok = passed if label == "right" else not passed
                rows.append((number, label, "passes" if passed else f"fails: {', '.join(failed) or out.stdout[-200:]}", ok))
                print(f"exercise {number}, {label}: {rows[-1][2]}{'' if ok else '   <-- WRONG'}", flush=True)
    print("\n| exercise | answer | the exercise's command |\n|--:|---|---|")
    for number, label, result, ok in rows:
        print(f"| {number} | {label} | {result} |")
    if not all(ok for *_, ok in rows):
        raise SystemExit("error: an answer was graded wrongly (marked above)")


if __name__ == "__main__":
    main()
