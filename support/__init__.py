"""The incidental machinery: what the five files at the top (seeupo, rollout, envs, train, eval) lean on, and
what a reader and a student never need to open. Read the top first; each file here opens with what it holds.

  sweep_tools.py   under seeupo.sweep(): micro-batches, sums over processes, the non-finite guard, SweepStats
  run_files.py     around train.py's loop: flags and config files, the run folder, checkpoints, --resume
  plots.py         curves of finished runs (eval.py --plot, train.py --plot, bench/compare.py's report)
  tiny.py          the embedded models `tiny` and `tiny-qwen`: recipe, warm-up, cache
  qwen_offline.py  Qwen's own tokenizer and the Qwen3 chat template, written offline (tiny-qwen's)
  user_env.py      --env: a built-in name, BFCL, or a class of yours (FILE.py:Class), checked before any model
  trl_env.py       a TRL environment_factory class played through envs.py's interface
  loaded_env.py    what the two loaders share: LoadedEnv, one-line errors, FILE.py:Name, the code digest
  bfcl.py          BFCL v4 multi-turn as an environment (optional package bfcl-eval)
  bfcl_calls.py    its safe call parser and runner (also the TRL adapter's)

The imports go one way: the top-level files import from here; of them, this package imports only seeupo (the
TurnSample type and the knob helper), rollout and envs (the embedded models' warm-up plays rollouts on the toy
environments). No file imports back into one that imports it (tests/test_layout.py walks the imports).
"""
