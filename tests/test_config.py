"""The habits users bring from TRL and Accelerate: eval.py --json."""

import json

import eval as evaluation


def test_eval_json_is_the_printed_table(tmp_path, capsys):
    """A random-init tiny model and its untrained (zero) adapter: both columns, the same numbers."""
    from rollout import load_policy
    from tiny import tiny_model, tiny_tokenizer
    model, adapter, out = tmp_path / "model", tmp_path / "adapter", tmp_path / "eval.json"
    tokenizer = tiny_tokenizer(0)
    tiny_model(tokenizer, 0).save_pretrained(model)
    tokenizer.save_pretrained(model)
    load_policy(str(model), seed=0).model.save_pretrained(adapter)
    table = evaluation.main(["--model", str(model), "--adapter", str(adapter), "--tasks", "3", "--samples", "2",
                             "--k", "1", "2", "--max_new_tokens", "8", "--json", str(out)])
    assert json.load(open(out)) == table
    assert table["args"]["tasks"] == 3 and set(table["results"]) == {"lookup"}
    base, tuned = table["results"]["lookup"]["base"], table["results"]["lookup"]["adapter"]
    assert set(base) == {"tasks", "samples", "success_rate", "pass@1", "pass@2"} and base == tuned
    printed = capsys.readouterr().out
    for key in ("success_rate", "pass@1", "pass@2"):
        assert f"{key:36}{base[key]:10.3f}{tuned[key]:10.3f}" in printed
