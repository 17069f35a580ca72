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


def load_object(spec, flag):
    """The object a `FILE.py:Name` or `package.module:Name` names; else one line naming what is wrong."""
    where, colon, name = spec.rpartition(":")
    if not colon or not where or not name.isidentifier():
        fail(f"{flag} {spec!r}: give FILE.py:Name or package.module:Name")
    try:
        if where.endswith(".py") or "/" in where or os.sep in where:
            if not os.path.isfile(where):
                fail(f"{flag} {spec}: no file {where}")
            module = _module_from_file(os.path.realpath(where))
        else:
            module = importlib.import_module(where)
    except SystemExit:
        raise
    except Exception as e:  # ModuleNotFoundError, a SyntaxError or any error while the user's file runs
        fail(f"{flag} {spec}: importing {where} failed ({one_line(e)})")
    if not hasattr(module, name):
        fail(f"{flag} {spec}: {where} defines no {name}")
    return getattr(module, name)


