"""The course kit for EXERCISES.md: the student edition in one command, and grading an autograder reads.

    python -m support.course handout DIR [--exercises 1 2 5]   # a copy of the project for students
    python -m support.course grade [--json results.json]        # every exercise's test, a table, an exit status

`handout` copies the project's tracked files into DIR, blanks the chosen exercises' functions to their
NotImplementedError line (signature and docstring kept), leaves out bench/wrong_answers.py (the one file that
holds the right answers, to plant them), checks that no line of a blanked body is left anywhere in the copy,
writes STUDENT.md and handout.json (the exercises handed out), and starts a fresh git history of one commit.
`grade` runs each exercise's grading command (the one EXERCISES.md names) and prints exercise, points, passed,
and the first failing line; --json writes Gradescope's results.json (tests with name, score, max_score,
output). Inside a handout it grades the exercises handed out; elsewhere all.

EXERCISES is the one place that says, per graded exercise, what is blanked, how it is graded and its points.
bench/wrong_answers.py plants right and wrong answers with plant_function from here.
"""

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]


class Exercise(NamedTuple):
    number: int
    title: str
    file: str       # the file the student edits
    function: str   # the function handed out blank ("" where the student adds something new)
    tests: list     # pytest arguments of its grading command (EXERCISES.md's)
    points: int
    check: str = ""  # a Python expression that must hold too, where the tests alone pass without an answer


EXERCISES = [
    Exercise(1, "GRAE by hand", "seeupo.py", "grae_advantages", ["tests/test_seeupo.py", "-k", "grae"], 10),
    Exercise(2, "The correction M_j", "seeupo.py", "correction_update",
             ["tests/test_seeupo.py", "-k", "correction"], 10),
    Exercise(3, "The order of the sweep", "seeupo.py", "turn_order",
             ["tests/test_seeupo.py", "-k", "turn_order or reverse_sweep"], 10),
    Exercise(4, "A new environment", "envs.py", "", ["tests/test_envs.py"], 20,
             check="len(__import__('envs').ENVS) > 3"),
    Exercise(5, "Token-level instead of sequence-level", "seeupo.py", "grpo_loss",
             ["tests/test_seeupo.py", "-k", "grpo or token_level"], 15),
    Exercise(6, "Step-level grouping (GiGPO)", "seeupo.py", "", ["tests/test_seeupo.py", "-k", "step_level"], 25),
]
BY_NUMBER = {e.number: e for e in EXERCISES}
ANSWERS = ["bench/wrong_answers.py"]  # the one file that holds right answers: never in a handout


def blank_message(exercise):
    return f"Exercise {exercise.number}: write {exercise.function}; see EXERCISES.md"


def function_span(text, function):
    """(first line of the body after the docstring, last line), 1-based, of the top-level `def function`."""
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            first = node.body[0]
            has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            return (first.end_lineno + 1 if has_doc else first.lineno), node.end_lineno
    raise SystemExit(f"error: no top-level function {function}")


def blank_function(text, exercise):
    """The file's text with the function's body (after its docstring) replaced by the NotImplementedError line;
    returns (new text, the body's lines that were removed)."""
    lines = text.splitlines(keepends=True)
    first, last = function_span(text, exercise.function)
    raise_line = f'    raise NotImplementedError("{blank_message(exercise)}")\n'
    return "".join(lines[: first - 1]) + raise_line + "".join(lines[last:]), lines[first - 1 : last]


def plant_function(text, function, code):
    """The file's text with the top-level `def function` replaced by `code` (appended where it has none)."""
    if not function:
        return text + code
    match = re.search(rf"^def {function}\(.*?(?=^\S)", text, flags=re.S | re.M)
    if not match:
        return text + "\n" + code
    return text[: match.start()] + code.lstrip("\n") + "\n\n" + text[match.end():]


def distinctive(lines):
    """The lines of a removed body that would give the answer away: the non-trivial ones."""
    out = []
    for line in lines:
        s = line.strip()
        if len(s) >= 16 and not s.startswith(("#", '"""')):
            out.append(s)
    return out


def tracked_files(root):
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"error: {root} is not a git checkout (the handout copies the files git tracks)")
    return [f for f in out.stdout.split("\0") if f]


def handout(out_dir, numbers, root=ROOT):
    """Write the student edition to out_dir (see the module docstring); returns the exercises handed out."""
    if os.path.exists(out_dir) and os.listdir(out_dir):
        raise SystemExit(f"error: {out_dir} is not empty; give a new folder")
    chosen = [BY_NUMBER[n] for n in numbers]
    for path in tracked_files(root):
        if path in ANSWERS or not os.path.isfile(os.path.join(root, path)):
            continue
        os.makedirs(os.path.join(out_dir, os.path.dirname(path)), exist_ok=True)
        shutil.copy2(os.path.join(root, path), os.path.join(out_dir, path))
    removed = []
    for exercise in chosen:
        if exercise.function:
            path = os.path.join(out_dir, exercise.file)
            text, lines = blank_function(open(path).read(), exercise)
            open(path, "w").write(text)
            removed += distinctive(lines)
    leaks = [f"{path}: {line}" for path in _text_files(out_dir) for line in removed
             if line in open(os.path.join(out_dir, path), errors="replace").read()]
    if leaks:
        raise SystemExit("error: a right answer is still in the handout: " + "; ".join(leaks[:5]))
    with open(os.path.join(out_dir, "handout.json"), "w") as f:
        json.dump({"exercises": [e.number for e in chosen]}, f)
    with open(os.path.join(out_dir, "STUDENT.md"), "w") as f:
        f.write(student_page(chosen))
    git = ["git", "-c", "user.name=course", "-c", "user.email=course@localhost"]
    for command in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-qm", "The handout"]):
        subprocess.run(command, cwd=out_dir, check=True, capture_output=True)
    return chosen


def _text_files(folder):
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            if name.endswith((".py", ".md", ".ipynb", ".yaml", ".txt", ".json")):
                yield os.path.relpath(os.path.join(base, name), folder)


def student_page(chosen):
    rows = "\n".join(f"| {e.number} | {e.title} | `{e.file}`{f', `{e.function}`' if e.function else ''} | "
                     f"{e.points} |" for e in chosen)
    return f"""# Your exercises

Read EXERCISES.md for what each one asks. Yours:

| exercise | what | where | points |
|--:|---|---|--:|
{rows}

A function handed out blank raises `NotImplementedError("Exercise N: ...")` until you write it: keep its
signature and docstring. Check your work at any time (the same command grades it):

```bash
python -m support.course grade              # a table: exercise, points, passed, the first failing line
```

Set up first as the README says (`pip install -r requirements.txt`). Commit as you go: `git log` is yours.
"""


def grade(numbers=None, root=ROOT, json_path=""):
    """Run each exercise's grading command in root; print the table; returns (results, all passed)."""
    if numbers is None:
        handed = os.path.join(root, "handout.json")
        numbers = json.load(open(handed))["exercises"] if os.path.exists(handed) else list(BY_NUMBER)
    results = []
    for exercise in (BY_NUMBER[n] for n in numbers):
        out = subprocess.run([*PYTEST, *exercise.tests], cwd=root, capture_output=True, text=True)
        summary = (out.stdout.strip().splitlines() or [""])[-1]
        passed = out.returncode == 0 and " passed" in summary and "skipped" not in summary
        first = "" if passed else _first_failure(out.stdout) if out.returncode else "skipped: not written yet"
        if passed and exercise.check:
            probe = subprocess.run([sys.executable, "-c", f"assert {exercise.check}"], cwd=root,
                                   capture_output=True, text=True)
            passed, first = probe.returncode == 0, "" if probe.returncode == 0 else f"not yet: {exercise.check}"
        results.append(dict(name=f"Exercise {exercise.number}: {exercise.title}", score=exercise.points * passed,
                            max_score=exercise.points, output=first or summary, number=exercise.number))
    print(f"{'exercise':>8}  {'points':>6}  {'passed':6}  first failing line")
    for r in results:
        print(f"{r['number']:>8}  {r['score']:>3}/{r['max_score']:<2}  {'yes' if r['score'] else 'no':6}  "
              f"{'' if r['score'] else r['output']}")
    total, most = sum(r["score"] for r in results), sum(r["max_score"] for r in results)
    print(f"{'total':>8}  {total:>3}/{most}")
    if json_path:
        tests = [{k: r[k] for k in ("name", "score", "max_score", "output")} for r in results]
        with open(json_path, "w") as f:
            json.dump({"score": total, "tests": tests}, f, indent=1)
    return results, total == most


def _first_failure(stdout):
    """The first `E   ...` line pytest printed (the failing assertion or exception), else its last line."""
    for line in stdout.splitlines():
        if line.startswith("E "):
            return line[1:].strip()[:200]
    return (stdout.strip().splitlines() or ["no output"])[-1][:200]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m support.course", description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    out = verbs.add_parser("handout", help="write the student edition to DIR")
    out.add_argument("dir")
    out.add_argument("--exercises", type=int, nargs="+", default=[e.number for e in EXERCISES],
                     choices=list(BY_NUMBER))
    marks = verbs.add_parser("grade", help="run every exercise's grading command")
    marks.add_argument("--exercises", type=int, nargs="+", choices=list(BY_NUMBER))
    marks.add_argument("--json", default="", help="write Gradescope's results.json here")
    args = parser.parse_args(argv)
    if args.verb == "handout":
        chosen = handout(args.dir, args.exercises)
        print(f"{args.dir}: exercises {', '.join(str(e.number) for e in chosen)} handed out (STUDENT.md); "
              f"one commit, no answers")
        return
    _, ok = grade(args.exercises, json_path=args.json)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
