"""What both environment loaders share (user_env.py for any class, trl_env.py for TRL's kind): the LoadedEnv they
return, one-line errors, loading `FILE.py:Name`, and the digest that names a class's tiny model in the cache.

A leaf: it imports nothing of this project, so user_env.py and trl_env.py both import it and not each other's
helpers.
"""

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
from typing import Callable, NamedTuple


class LoadedEnv(NamedTuple):
    """What the training loop needs from --env, a built-in name or a class of yours."""
    name: str           # the environment's name (logs, transcripts)
    factory: Callable   # factory() -> a fresh environment for one episode
    train_tasks: list   # plain JSON dicts, each with a unique "id"
    test_tasks: list
    digest: str         # what shapes its episodes (code, tasks), hashed: the tiny model's cache key; "" for a
    #                     built-in environment (the default tiny model plays it)


def fail(message):
    raise SystemExit(f"error: {message}")


def one_line(error, limit=200):
    """An exception as one short line: its type, and the first line of its text."""
    try:
        text = str(error).strip().splitlines()
    except Exception:  # a broken __str__
        text = []
    line = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def is_message(m):
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def code_text(obj, leave_out=()):
    """The code of a module (or of a class's or function's module) as it runs: comments and docstrings left
    out, so that editing them changes nothing that is hashed; and the top-level definitions named in
    leave_out. A module without source (compiled) stands in by its name."""
    module = obj if inspect.ismodule(obj) else inspect.getmodule(obj)
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError, SyntaxError):
        return getattr(module, "__name__", repr(obj))
    tree.body = [node for node in tree.body if not _defines(node, leave_out)]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _defines(node, names):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return node.name in names
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    return any(isinstance(t, ast.Name) and t.id in names for t in targets)


def digest(code, *parts):
    """A short hash of the code of `code` (modules or classes, code_text) and of the parts (tasks, flags)."""
    text = json.dumps([*map(code_text, code), *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


# ----------------------------------------------------------------------------- FILE.py:Name, package.module:Name
@functools.lru_cache(maxsize=None)
def _module_from_file(path):
    """A Python file as a module, loaded once per file (a class and a reward from one file share it), under a
    name of its own (a user's envs.py must not replace this project's); its folder goes at the end of sys.path
    for its own imports (at the end: its files must not hide this project's modules)."""
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"user_{stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up here
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.append(folder)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # no half-run module left behind
        raise
    return module


PROJECT_MODULES = ("seeupo", "rollout", "envs", "train", "eval", "tabular", "support")  # the names ours take


def load_object(spec, flag):
    """The object a `FILE.py:Name` or `package.module:Name` names; else one line naming what is wrong and what
    to change (a published script as it is: a class inside main(), training at import, a missing package)."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name.isidentifier():
        fail(f"{flag} {spec!r}: give FILE.py:Name or package.module:Name")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    try:
        if is_file:
            if not os.path.isfile(where):
                fail(f"{flag} {spec}: no file {where}")
            _refuse_work_at_import(where, flag, spec)
            module = _module_from_file(os.path.realpath(where))
        else:
            module = importlib.import_module(where)
    except SystemExit:
        raise
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if not is_file and (where + ".").startswith((e.name or "") + "."):  # the module named is not there
            fail(f"{flag} {spec}: importing {where} failed ({one_line(e)})")
        folder = os.path.dirname(os.path.realpath(where)) if is_file else os.getcwd()
        if missing in PROJECT_MODULES and e.name != missing:  # `import envs.wordle` where envs is ours
            fail(f"{flag} {spec}: {where} imports its own `{missing}` package, which this project's {missing} "
                 f"module hides (both are named {missing}): rename your package (say, my_{missing}) and the "
                 f"imports of it")
        fail(f"{flag} {spec}: importing {where} needs `{missing}`, which is not installed"
             + (f" (nor a file in {folder})" if is_file else "") + f": pip install {missing} (its package may "
             f"be named otherwise), or move that import into the function that uses it")
    except Exception as e:  # a SyntaxError or any error while the user's file runs
        fail(f"{flag} {spec}: importing {where} failed ({one_line(e)})")
    if not hasattr(module, name):
        nested = _nested_definition(where, name) if is_file else None
        if nested:
            fail(f"{flag} {spec}: {name} is defined inside {nested}: move it to the top level of {where}, so "
                 f"that it can be imported")
        fail(f"{flag} {spec}: {where} defines no {name}")
    return getattr(module, name)


def _top_level_statements(tree):
    """The module's own statements that run at import, `if __name__ == "__main__":` blocks left out."""
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.dump(node.test):
            continue
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node


def _refuse_work_at_import(path, flag, spec):
    """A script that trains (or runs its main()) when imported: one line, before it runs."""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (SyntaxError, ValueError, OSError):
        return  # importing it says what is wrong
    for statement in _top_level_statements(tree):
        for node in ast.walk(statement):
            func = getattr(node, "func", None) if isinstance(node, ast.Call) else None
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("train", "main"):
                fail(f"{flag} {spec}: {path} runs {ast.unparse(node)[:60]} when imported (line {node.lineno}): "
                     f"put that under `if __name__ == \"__main__\":`, so that importing the file only defines "
                     f"its classes")


def _nested_definition(path, name):
    """Where `name` is defined inside a function of the file ("main(), line 12"), or None."""
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (SyntaxError, ValueError, OSError):
        return None
    for outer in ast.walk(tree):
        if isinstance(outer, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(outer):
                if inner is not outer and isinstance(inner, (ast.ClassDef, ast.FunctionDef)) and inner.name == name:
                    return f"{outer.name}(), line {inner.lineno}"
    return None
