"""The embedded default model `tiny`: built offline once (1.8 min at 2 threads on a 2-core AMD EPYC), then cached.

A 0.36M-parameter, 2-layer Qwen3 (random init from the seed) with a small BPE tokenizer trained in code and a
Qwen-style (ChatML) chat template, then WARMED UP with a language-model loss on whole transcripts of episodes
of uniformly random well-formed actions on the toy environments' training tasks -- the format, never a
reward nor a held-out task -- so that, like an instruct model, it speaks the action format (and can copy
from its context) but knows no strategy.

  tiny_tokenizer(seed)  the BPE tokenizer and the chat template
  tiny_model(tokenizer, seed)  the random-init Qwen3 (the tests use it as is: no skill needed)
  build_tiny(seed, env)  tokenizer + model + warm-up, saved as a model folder; returns the folder. With `env`
                        (a class of yours, user_env.LoadedEnv): the default model plus call_tokens(its tools),
                        warmed up further on its random actions (ENV_WARMUP), so it speaks your format too
                        (interleaved with the default's own environments, so it keeps what it could do)
  tiny_path(seed, digest)  that folder: under ~/.cache/seeupo (SEEUPO_CACHE overrides), named by a hash of
                        everything that shapes the model (this file, the environments' code, your env's digest)
  warmup_batches(...)   each warm-up step's episodes of random well-formed actions (tiny-qwen's warm-up uses it too)
  model_path(name, seed, env)   what --model names, as a folder or Hub name: "tiny" and "tiny-qwen"
                        (qwen_offline.py) are built once, the rest passes as given
  ScriptedPolicy        stands in for a model in rollout(): the warm-up's random actor, and the tests' oracle

How it connects: train.py, eval.py and the bench scripts resolve --model with model_path() and load the folder
with rollout.load_policy() like any local model (rollout.py never imports this file). The warm-up plays its
random episodes through rollout.rollout() with a ScriptedPolicy and trains through Policy.turn_logprobs, so the
model sees exactly the token sequences that RL will produce.
"""

import hashlib
import inspect
import json
import os
import random
import shutil

import torch
from transformers import AutoTokenizer, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

import envs
from rollout import END_OF_TURN, Actions, Policy, SamplingArgs, rollout
from seeupo import ALL_TURNS, TurnSample

TINY_CONFIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rope_theta=10000.0,
                   tie_word_embeddings=False)  # tied, exchangeable tokens (lockers A-D) collapse together
# 800 steps with the lr decayed linearly to 0: copying a digit from a reply appears late (at 400 steps the
# model still garbles ~75% of relay turns, at 800 ~6%), as in-context copying does in pretraining
TINY_WARMUP = dict(steps=800, episodes=32, lr=3e-3)
# a user environment's warm-up, from the default model (which can already copy): only its format is new. 200 x 16
# episodes: 3 turns in 506 malformed after it, held-out lookup_trl at 0.05 (as lookup's); 150 x 32 at lr 1e-3 left 10%.
# Interleaved with as many steps on the default's environments (rehearsal): without them the new format's random
# actions wash out copying from a message into a call (relay's offered doors, seed 2: 0.87 -> 0.35 of the mass,
# chance 0.2; with them 0.82; bench/results/warmup_copy.md), and lookup_trl's seed 2 learned to guess codes
# instead of reading them (docs/environments.md)
ENV_WARMUP = dict(steps=200, episodes=16, lr=3e-3)
# ChatML as Qwen writes it: tools listed in the system turn (one line each, its name and its arguments' types or
# enums: a JSON schema would be ~600 tokens of this tokenizer), tool calls and tool responses as text.
# (HF renders with trim_blocks: a newline right after a {% tag %} is dropped, hence the {{ '\\n' }}.)
TINY_CHAT_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "<tools>{% for tool in tools %}{% set f = tool.function if tool.function is defined else tool %}"
    "{{ '\\n' }}{{ f.name }}({% for name, p in (f.parameters.properties if f.parameters is defined and "
    "f.parameters.properties is defined else {}).items() %}{{ ', ' if not loop.first }}{{ name }}: "
    "{{ p.enum | map('tojson') | join('|') if p.enum is defined else p.type if p.type is string "
    "else p.type | join('|') if p.type is defined else 'any' }}"
    "{% endfor %}){% endfor %}{{ '\\n' }}</tools><|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}"
    "{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "{{ '\\n' }}<tool_response>\n{{ m.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% elif not (m.role == 'system' and tools and loop.first) %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for call in m.tool_calls or [] %}{{ '\\n' }}<tool_call>\n{{ call.function | tojson }}\n</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _random_conversations(n_per_env, rng):
    """Episodes of uniformly random well-formed actions on training tasks, as chat messages."""
    for env_cls in envs.ENVS.values():
        for task in rng.choices(env_cls.tasks("train"), k=n_per_env):
            env, done = env_cls(), False
            messages = env.reset(task)
            while not done:
                action = env.random_action(rng)
                reply, done, _, _ = env.step(action)
                messages += [{"role": "assistant", "content": action}] + reply
            yield messages


def tiny_tokenizer(seed=0):
    """A small BPE (printable ASCII + ~100 merges) trained in code on rendered random episodes of the toy
    environments, with Qwen's special tokens and a Qwen-style chat template. Deterministic from the seed."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    specials = ["<|endoftext|>", "<|im_start|>", END_OF_TURN]
    tok = Tokenizer(models.BPE(unk_token="<|unk|>"))
    # words keep their leading space; a lone letter, every digit and every other character stand alone,
    # so "C" is the same token in "Code of C?", "get(C)" and "C has 2" (copying it is a real copy)
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(" ?[A-Za-z]{2,}|[A-Za-z0-9]|\\s|[^A-Za-z0-9\\s]"), behavior="isolated")
    tok.decoder = decoders.Fuse()

    def wrap():
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_OF_TURN, pad_token="<|endoftext|>",
                                            additional_special_tokens=specials)
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        return tokenizer

    render = wrap()  # rendering text needs no vocabulary yet
    texts = [render.apply_chat_template(m, tokenize=False) for m in _random_conversations(300, random.Random(seed))]
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials + ["<|unk|>"], show_progress=False,
        initial_alphabet=["\n"] + [chr(c) for c in range(32, 127)]))
    return wrap()


class ScriptedPolicy(Policy):
    """Stands in for a model in rollout(): `script(episode)` writes each turn, as text (an end-of-turn token
    is appended) or as raw ids (kept as they are). The warm-up's random actor; the tests' oracle."""

    def __init__(self, tokenizer, script, chat_kwargs=None):
        super().__init__(None, tokenizer, chat_kwargs=chat_kwargs)
        self.script = script

    def act(self, episodes, sampling, reference=False):
        out = []
        for episode in episodes:
            action = self.script(episode)
            if isinstance(action, str):
                action = self.tokenizer(action, add_special_tokens=False)["input_ids"] + self.stop_ids[:1]
            action = action[: sampling.max_new_tokens]
            out.append((action, [0.0] * len(action), [0.0] * len(action)))
        return out


def model_path(name, seed=0, env=None):
    """--model as what rollout.load_policy() takes: "tiny" is the embedded default, or with `env`
    (user_env.LoadedEnv of a class of yours: a digest) the tiny model warmed up on that environment too;
    "tiny-qwen" is its twin with Qwen's real tokenizer and template (all built once, cached); anything else
    (a Hub name, a local folder) passes through unchanged. Nothing after this names the model: only its folder."""
    if name == "tiny-qwen":
        import qwen_offline
        return qwen_offline.build_tiny_qwen(seed)
    return build_tiny(seed, env if env is not None and env.digest else None) if name == "tiny" else name


def default_draw(rng, episodes):
    """draw(step) of the default warm-up: the environments of envs.ENVS in turn, `episodes` training tasks of one
    (an environment with fewer tasks than that: drawn with replacement)."""
    names = list(envs.ENVS)

    def draw(step):
        env_cls = envs.ENVS[names[step % len(names)]]
        tasks = env_cls.tasks("train")
        return env_cls, rng.sample(tasks, episodes) if len(tasks) >= episodes else rng.choices(tasks, k=episodes)
    return draw


def warmup_batches(tokenizer, draw, steps, sampling, rng, chat_kwargs=None):
    """The warm-up's data: for each step, draw(step)'s (environment factory, tasks) played with uniformly random
    well-formed actions through rollout(), as RL will play them."""
    random_actor = ScriptedPolicy(tokenizer, lambda episode: episode.env.random_action(rng), chat_kwargs)
    for step in range(steps):
        factory, tasks = draw(step)
        yield rollout(random_actor, factory, tasks, group_size=1, sampling=sampling)  # factory(): fresh env


def tiny_path(seed, digest=""):
    """The cache folder of the tiny model for this seed; its name hashes everything that shapes it: this file
    (the config, the template, the tokenizer, the warm-up) and envs.py, the environments it warms up on; and for
    a user's environment its digest (its code and tasks: user_env.LoadedEnv.digest)."""
    with open(__file__) as f:
        recipe = json.dumps([f.read(), inspect.getsource(envs)])  # the whole file: its helpers shape tasks too
    name = hashlib.sha256(recipe.encode()).hexdigest()[:10] + (f"-{digest}" if digest else "")
    root = os.environ.get("SEEUPO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "seeupo"))
    return os.path.join(root, f"tiny-{name}-seed{seed}")


def tiny_model(tokenizer, seed=0):
    """The tiny Qwen3, randomly initialised from the seed (before its warm-up)."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **TINY_CONFIG))


def warm_up(model, tokenizer, draw, steps, lr, sampling, rng):
    """Next-token loss on whole transcripts of random episodes, as pretraining would: predicting the environment's
    replies (say, "C has" after get(C)) teaches in-context copying; the actions are uniform noise. draw(step) ->
    (environment factory, tasks) of one step; lr decays linearly to 0. Returns the last step's loss."""
    policy = Policy(model, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 - k / steps)
    for episodes in warmup_batches(tokenizer, draw, steps, sampling, rng):
        every = [list(range(1, len(e.token_ids))) for e in episodes]
        logp, mask = policy.turn_logprobs([TurnSample(j, ALL_TURNS, len(e.token_ids),
                                                      Actions(e.token_ids, len(e.token_ids), q, q))
                                           for j, (e, q) in enumerate(zip(episodes, every))])
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


def env_warm_up(model, tokenizer, env, rng, rehearse=True):
    """ENV_WARMUP on a user environment (a user_env.LoadedEnv), every other step on the default's own environments
    unless rehearse=False (bench/warmup_copy.py's ablation). Returns the last step's loss."""
    rehearsal = default_draw(rng, ENV_WARMUP["episodes"])

    def draw(step):  # every other step the default's own environments: the model keeps what it could do
        if rehearse and step % 2:
            return rehearsal(step // 2)
        return env.factory, rng.choices(env.train_tasks, k=ENV_WARMUP["episodes"])  # a file may hold few rows
    return warm_up(model, tokenizer, draw, (2 if rehearse else 1) * ENV_WARMUP["steps"], ENV_WARMUP["lr"],
                   SamplingArgs(max_new_tokens=1024, max_context=4096), rng)  # a turn is never cut here


def call_tokens(tools):
    """The tokens a user environment's tiny model adds to the default one's: the tool-call tags (Qwen has them
    as tokens too) and, from the tools' schemas, each tool's call opening and each argument's key as json.dumps
    writes them, and the closing. The default BPE splits JSON at every quote and brace (63 tokens for one call
    of lookup_trl's get(locker); 7 with these), and its merges cannot be retrained without a new model."""
    tokens = ["<tools>", "</tools>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
              "}}\n</tool_call>"]
    for tool in tools or []:
        function = tool.get("function", tool)
        tokens.append('<tool_call>\n{"name": ' + json.dumps(function["name"]) + ', "arguments": {')
        tokens += [json.dumps(key) + ": " for key in function.get("parameters", {}).get("properties", {})]
    return list(dict.fromkeys(tokens))


def build_tiny(seed, env=None, log=print):
    """Create (or find in the cache) the warmed-up tiny model; returns its folder. env: a user_env.LoadedEnv of a
    class of yours -- then the default model of this seed (built first if need be) with `call_tokens` added,
    warmed up further on random episodes of that environment (ENV_WARMUP), every other step on the default's own
    environments: it speaks your format too and still copies from its context."""
    path = tiny_path(seed, env.digest if env else "")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    rng = random.Random(seed)
    if env is None:
        log(f"building the tiny default model (once; cached in {path}) ...")
        tokenizer = tiny_tokenizer(seed)
        model = tiny_model(tokenizer, seed)
        draw = default_draw(rng, TINY_WARMUP["episodes"])
        loss = warm_up(model, tokenizer, draw, TINY_WARMUP["steps"], TINY_WARMUP["lr"], SamplingArgs(), rng)
    else:
        base = build_tiny(seed, log=log)
        log(f"warming the tiny model up on {env.name} (once; cached in {path}) ...")
        tokenizer, model = AutoTokenizer.from_pretrained(base), Qwen3ForCausalLM.from_pretrained(base)
        tokenizer.chat_template = TINY_CHAT_TEMPLATE  # (the default's, unless its folder was put there by hand)
        add_tokens(model, tokenizer, call_tokens(env.factory().tools))

        loss = env_warm_up(model, tokenizer, env, rng)
    tmp = f"{path}.tmp{os.getpid()}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.rename(tmp, path)  # atomic: a concurrent or killed build never leaves a half-written model
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished first
    log(f"tiny model ready (warm-up loss {loss:.3f})")
    return path


def add_tokens(model, tokenizer, tokens):
    """New tokens, each with the mean of its pieces' input and output embeddings (what it spells), not noise."""
    pieces = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in tokens}
    tokenizer.add_tokens(tokens)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for token, ids in pieces.items():
            new = tokenizer.convert_tokens_to_ids(token)
            for weights in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
                weights[new] = weights[ids].mean(0)
