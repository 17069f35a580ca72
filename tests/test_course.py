"""support/course.py: the student edition and its grading, as an instructor uses them (EXERCISES.md)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from support import course


def right_answer(function):
    """The project's own body of a graded function, as a student would write it back."""
    text = open(os.path.join(ROOT, "seeupo.py")).read()
    first, last = course.function_span(text, function)
    lines = text.splitlines(keepends=True)
    start = next(i for i in range(first - 1, 0, -1) if lines[i].startswith("def "))
    return "".join(lines[start:last]), course.distinctive(lines[first - 1 : last])


def run_course(*args, cwd):
    return subprocess.run([sys.executable, "-m", "support.course", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.slow
def test_a_handout_fails_with_its_messages_has_no_answers_and_grades_full_once_they_are_back(tmp_path):
    out = tmp_path / "handout"
    made = run_course("handout", str(out), "--exercises", "1", "2", "5", cwd=ROOT)
    assert made.returncode == 0, made.stderr
    log = subprocess.run(["git", "log", "--oneline"], cwd=out, capture_output=True, text=True).stdout
    assert len(log.splitlines()) == 1  # a fresh history: the originals are not in it
    assert not (out / "bench" / "wrong_answers.py").exists() and (out / "STUDENT.md").exists()

    graded = run_course("grade", "--json", str(tmp_path / "results.json"), cwd=out)
    assert graded.returncode == 1
    for number, function in ((1, "grae_advantages"), (2, "correction_update"), (5, "grpo_loss")):
        assert f"NotImplementedError: Exercise {number}: write {function}; see EXERCISES.md" in graded.stdout
    results = json.load(open(tmp_path / "results.json"))  # Gradescope's results.json
    assert results["score"] == 0 and [t["max_score"] for t in results["tests"]] == [10, 10, 15]
    assert all(set(t) == {"name", "score", "max_score", "output"} for t in results["tests"])

    everything = "\n".join(open(os.path.join(base, f), errors="replace").read()
                           for base, dirs, files in os.walk(out) if ".git" not in base for f in files)
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import wrong_answers  # every right answer the instructors plant, exercise 6's among them
    for function in ("grae_advantages", "correction_update", "grpo_loss"):
        for line in right_answer(function)[1]:
            assert line not in everything, line
    for line in course.distinctive(wrong_answers.STEP_RIGHT.splitlines()):
        assert line not in everything, line

    seeupo = out / "seeupo.py"
    for function in ("grae_advantages", "correction_update", "grpo_loss"):  # the student's right answers
        seeupo.write_text(course.plant_function(seeupo.read_text(), function, right_answer(function)[0]))
    graded = run_course("grade", "--json", str(tmp_path / "results.json"), cwd=out)
    assert graded.returncode == 0, graded.stdout
    assert json.load(open(tmp_path / "results.json"))["score"] == 35


def test_blanking_keeps_the_signature_and_docstring():
    text = open(os.path.join(ROOT, "seeupo.py")).read()
    blank, removed = course.blank_function(text, course.BY_NUMBER[2])
    namespace = {}
    exec(compile(blank, "seeupo.py", "exec"), namespace)
    assert namespace["correction_update"].__doc__ == __import__("seeupo").correction_update.__doc__
    with pytest.raises(NotImplementedError, match="Exercise 2: write correction_update; see EXERCISES.md"):
        namespace["correction_update"](None, None, None, None, 0.2)
    assert removed and all(line not in blank for line in course.distinctive(removed))


def test_exercise_4_is_not_passed_by_the_toy_environments_alone():
    grading = course.BY_NUMBER[4]
    assert not eval(grading.check.replace("__import__('envs')", "envs"), {"envs": __import__("envs")})
