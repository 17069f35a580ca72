"""The project's shape: the card's five files (and tabular.py) at the top, the rest in support/, no import circle
anywhere in the project's code, and the embedded models' cache key moved by code, never by a comment."""

import ast
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

CARD = {"seeupo.py", "rollout.py", "envs.py", "train.py", "eval.py", "tabular.py"}


def test_the_top_level_holds_the_card_and_tabular_only():
    assert {f for f in os.listdir(ROOT) if f.endswith(".py")} == CARD


def project_modules():
    """{module name: file} of the top level and support/ (tests, bench and examples may import anything)."""
    modules = {f[:-3]: os.path.join(ROOT, f) for f in CARD}
    for f in os.listdir(os.path.join(ROOT, "support")):
        if f.endswith(".py"):
            name = "support" if f == "__init__.py" else f"support.{f[:-3]}"
            modules[name] = os.path.join(ROOT, "support", f)
    return modules


def imports(path, modules):
    """The project modules a file imports, at its top or inside a function (a lazy import is still an edge)."""
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out |= {node.module} & set(modules)
            out |= {f"{node.module}.{a.name}" for a in node.names} & set(modules)
    return out


def test_no_import_circle():
    modules = project_modules()
    edges = {m: imports(p, modules) - {m} for m, p in modules.items()}
    assert edges["train"] and "support.tiny" in edges["train"]  # the walk sees `from support import tiny`
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for n in sorted(edges[m]):
            assert state.get(n) != "open", "import circle: " + " -> ".join(path[path.index(n):] + [n])
            if n not in state:
                visit(n)
        state[m] = "done"
        path.pop()

    for m in sorted(modules):
        if m not in state:
            visit(m)


def cache_folders(*roots):
    """The tiny and tiny-qwen cache folder names each copy of the project computes, in subprocesses run at once."""
    code = "from support import tiny; print(tiny.cache_folder('tiny', 0), tiny.cache_folder('tiny-qwen', 0))"
    runs = [subprocess.Popen([sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True)
            for root in roots]
    outs = [run.communicate()[0].split() for run in runs]
    assert all(run.returncode == 0 for run in runs)
    return [[os.path.basename(path) for path in out] for out in outs]


def edited_copy(tmp_path, name, edits):
    """The project's code in tmp_path/name with edits: {file: (old text, new text)}."""
    copy = tmp_path / name
    shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".*", "tests", "bench", "docs", "runs", "__pycache__"))
    for file, (old, new) in edits.items():
        text = (copy / file).read_text()
        assert old in text, (file, old)
        (copy / file).write_text(text.replace(old, new, 1))
    return copy


@pytest.mark.slow  # four subprocesses that import torch
def test_a_comment_or_docstring_edit_rebuilds_nothing_and_a_change_to_the_recipe_does(tmp_path):
    commented = edited_copy(tmp_path, "commented", {
        "support/tiny.py": ('"""The two embedded models', '"""(edited) The two embedded models'),
        "envs.py": ("import itertools\n", "import itertools  # a comment a student added\n"),
    })
    warm_up = edited_copy(tmp_path, "steps", {"support/tiny.py": ("steps=800,", "steps=801,")})
    replies = edited_copy(tmp_path, "replies", {"envs.py": ('f"{door}: dead end"', 'f"{door}: a dead end"')})
    (tiny, tiny_qwen), edited, longer, other = cache_folders(ROOT, commented, warm_up, replies)
    assert tiny.startswith("tiny-") and tiny_qwen.startswith("tiny-qwen-")
    assert edited == [tiny, tiny_qwen]  # comments and docstrings: nothing rebuilt
    assert longer[0] != tiny and other[0] != tiny  # a warm-up setting; an environment's replies (its data)
