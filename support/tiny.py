"""The two embedded models, `tiny` and `tiny-qwen`: built offline once, then cached (~/.cache/seeupo, or
SEEUPO_CACHE).

`tiny` is a 0.36M-parameter, 2-layer Qwen3 (random init from the seed) with a small BPE tokenizer trained in
code and a Qwen-style (ChatML) chat template; `tiny-qwen` is the same model with Qwen's own tokenizer and
Qwen3 template (qwen_offline.py writes them). Both are WARMED UP with a language-model loss on whole
transcripts of episodes of uniformly random well-formed actions on the toy environments' training tasks --
the format, never a reward nor a held-out task -- so that, like an instruct model, they speak the action
format (and copy from their context) but know no strategy. Measurements of the recipe: docs/default.md.

  build(name, seed, env)   what train.py and eval.py call for --model tiny / tiny-qwen: the cached folder,
                        built first if need be (minutes, with a progress bar). With `env` (a class of yours, a
                        LoadedEnv with a digest) `tiny` is the default model plus call_tokens(its tools),
                        warmed up further on its random actions (ENV_WARMUP), interleaved with the default's
                        environments
  warm_up(...)          the one warm-up loop both models train with (only their loss differs: tiny's is a
                        plain next-token loss, tiny-qwen's the exact full-vocabulary one at the cost of the
                        shown tokens)
  recipe_key(name)      the cache folder's name: a hash of what shapes the model -- this file's code (the
                        configs, tokenizer, template and warm-up settings; not CACHE_ONLY, the cache's own
                        machinery), the toy environments' data as the warm-up sees it -- never comments or
                        docstrings (loaded_env.code_text)
  built_once(path, build)   one build at a time: a lock beside the folder, a second process waits for it
  own_base(adapter, base)   the base an adapter was trained on (its adapter_config.json), or one line
  tiny_tokenizer(seed), tiny_model(tokenizer, seed)   the BPE tokenizer and the random-init Qwen3 (the tests
                        use them)
  ScriptedPolicy        stands in for a model in rollout(): the warm-up's random actor, and the tests' oracle

How it connects: the folder loads with rollout.load_policy() like any local model (rollout.py never imports
this file). The warm-up plays its random episodes through rollout.rollout() with a ScriptedPolicy, so the
model learns from exactly the token sequences that RL will produce.
"""

import hashlib
import json
import os
import random
import re
import shutil
import sys

import torch
from filelock import FileLock, Timeout
from tqdm import tqdm
from transformers import (AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedTokenizerFast,
                          Qwen3Config, Qwen3ForCausalLM)

import envs
from rollout import END_OF_TURN, Policy, SamplingArgs, rollout
from support import qwen_offline
from support.loaded_env import code_text
from support.sweep_tools import left_aligned, micro_batches

# what recipe_key leaves out of this file's code: the cache's own machinery, which shapes no model
CACHE_ONLY = ("EMBEDDED", "CACHE_ONLY", "QWEN_ONLY", "FOLDER", "folder", "build", "parse_folder", "trained_base",
              "trained_with", "own_base", "environments_fingerprint", "recipe_key", "cache_folder", "tiny_path",
              "tiny_qwen_path", "built_once", "_recipe_key", "_KEYS", "is_built")
QWEN_ONLY = ("TINY_QWEN_CONFIG", "build_tiny_qwen", "warm_up_qwen")  # what shapes tiny-qwen and not tiny
EMBEDDED = ("tiny", "tiny-qwen")  # --model names this file builds; any other name is a folder or a Hub name
TINY_CONFIG = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, max_position_embeddings=4096, rope_theta=10000.0,
                   tie_word_embeddings=False)  # tied, exchangeable tokens (lockers A-D) collapse together
# beside tiny, only the vocabulary, tokenizer and template differ, and the embeddings are tied as Qwen3-0.6B's
TINY_QWEN_CONFIG = {**TINY_CONFIG, "tie_word_embeddings": True}
# copying from a reply appears late (docs/default.md); lr 3e-3 taught less of it (bench/results/recipe_search)
TINY_WARMUP = dict(steps=800, episodes=32, lr=2e-3)
# a class of yours, from the default model: its format is new, copying is not; every other step rehearses
# the default's environments, so that copying survives (bench/results/warmup_copy.md)
ENV_WARMUP = dict(steps=200, episodes=16, lr=3e-3)
# ChatML as Qwen writes it: tools listed in the system turn (one line each, its name and its arguments' types
# or enums: a JSON schema would be ~600 tokens of this tokenizer), tool calls and tool responses as text.
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
    "{% for call in m.tool_calls or [] %}{{ '\\n' }}<tool_call>\n{{ call.function | tojson }}\n</tool_call>"
    "{% endfor %}"
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
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(" ?[A-Za-z]{2,}|[A-Za-z0-9]|\\s|[^A-Za-z0-9\\s]"),
                                             behavior="isolated")
    tok.decoder = decoders.Fuse()

    def wrap():
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=END_OF_TURN,
                                            pad_token="<|endoftext|>", additional_special_tokens=specials)
        tokenizer.chat_template = TINY_CHAT_TEMPLATE
        return tokenizer

    render = wrap()  # rendering text needs no vocabulary yet
    texts = [render.apply_chat_template(m, tokenize=False)
             for m in _random_conversations(300, random.Random(seed))]
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
        self.encoded = {}  # text -> ids, each text tokenized once: a random actor repeats a few dozen actions

    def act(self, episodes, sampling, reference=False):
        out = []
        for episode in episodes:
            action = self.script(episode)
            if isinstance(action, str):
                if action not in self.encoded:
                    self.encoded[action] = (self.tokenizer(action, add_special_tokens=False)["input_ids"]
                                            + self.stop_ids[:1])
                action = self.encoded[action]
            action = action[: sampling.max_new_tokens]  # (a copy: the cached ids stay as they are)
            out.append((action, [0.0] * len(action), [0.0] * len(action)))
        return out


def folder(name, seed=0, env=None):
    """The cache folder of --model tiny or tiny-qwen (built or not); env: the LoadedEnv of --env."""
    digest = env.digest if name == "tiny" and env is not None else ""
    return tiny_path(seed, digest) if name == "tiny" else tiny_qwen_path(seed)


def build(name, seed=0, env=None, log=print):
    """--model tiny or tiny-qwen as a folder, built first if it is not cached (minutes, a progress bar). env:
    the LoadedEnv of --env; a class of yours (a digest) gets the tiny model warmed up on it too."""
    if name == "tiny-qwen":
        return build_tiny_qwen(seed, log)
    return build_tiny(seed, env if env is not None and env.digest else None, log)


# cache_folder's names: NAME-KEY[-DIGEST]-seedN
FOLDER = re.compile(r"^(tiny|tiny-qwen)-([0-9a-f]{10})(?:-([0-9a-f]{10}))?-seed(\d+)$")


def parse_folder(path):
    """(name, recipe key, your class's digest or "", seed) of an embedded model's cache folder; None for any
    other model (a Hub name, a folder of yours)."""
    match = FOLDER.match(os.path.basename(os.path.normpath(str(path))))
    return match and (match[1], match[2], match[3] or "", int(match[4]))


def trained_base(adapter):
    """The base model an adapter was trained on, as peft records it (adapter_config.json's
    base_model_name_or_path): for an embedded model its cache folder, whose name says its recipe and seed."""
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        return json.load(f).get("base_model_name_or_path") or ""


def trained_with(adapter):
    """(--model, --seed) of the run that trained `adapter`: an embedded model's name and seed, else the
    recorded name or folder and None."""
    recorded = trained_base(adapter)
    parsed = parse_folder(recorded)
    return (parsed[0], parsed[3]) if parsed else (recorded, None)


def own_base(adapter, base, log=print):
    """The base to load `adapter` onto, where `base` is what the flags name now: that one, if it is the model
    the adapter was trained on; for an embedded model whose recipe changed since (envs.py or this file edited:
    a new cache key) the adapter's own folder while the cache keeps it. Any other model, seed or environment
    -- or a base that is gone -- stops in one line: an adapter never meets another base silently."""
    recorded = trained_base(adapter)
    was, now = parse_folder(recorded), parse_folder(base)
    if not recorded or recorded == base or was and was == now:  # a moved cache: the same name, the same model
        return base
    if not (was and now and (was[0], was[2], was[3]) == (now[0], now[2], now[3])):
        raise SystemExit(f"error: the adapter {adapter} was trained on {recorded}, and the flags name "
                         f"{base}: leave out the --model, --seed or --env that contradicts it, or give "
                         f"the ones it was trained with")
    if is_built(recorded):
        log(f"note: {was[0]}'s recipe changed since the adapter was trained (today: "
            f"{os.path.basename(base)}); loading it on its own base, {recorded}")
        return recorded
    raise SystemExit(f"error: the adapter was trained on {recorded}, which is no longer in the cache, and "
                     f"today's code builds another {was[0]} ({os.path.basename(base)}: envs.py or "
                     f"support/tiny.py changed since): check out the commit it was trained with (git log) to "
                     f"rebuild its base, or train again")


def default_draw(rng, episodes):
    """draw(step) of the default warm-up: the environments of envs.ENVS in turn, `episodes` training tasks of
    one (an environment with fewer tasks than that: drawn with replacement)."""
    names = list(envs.ENVS)
    train_tasks = {name: envs.ENVS[name].tasks("train") for name in names}  # drawn once: relay's take 0.3 s

    def draw(step):
        name = names[step % len(names)]
        tasks = train_tasks[name]
        return envs.ENVS[name], (rng.sample(tasks, episodes) if len(tasks) >= episodes
                                 else rng.choices(tasks, k=episodes))
    return draw


def warmup_batches(tokenizer, draw, steps, sampling, rng, chat_kwargs=None):
    """The warm-up's data: for each step, draw(step)'s (environment factory, tasks) played with uniformly
    random well-formed actions through rollout(), as RL will play them."""
    random_actor = ScriptedPolicy(tokenizer, lambda episode: episode.env.random_action(rng), chat_kwargs)
    for step in range(steps):
        factory, tasks = draw(step)
        yield rollout(random_actor, factory, tasks, group_size=1, sampling=sampling)  # factory(): fresh env


def environments_fingerprint(episodes=4):
    """The toy environments as the default warm-up sees them, as data: each one's name, tools and training
    tasks, and a few episodes of random actions (so a change to a task generator, a reply or random_action
    counts)."""
    return [[[name, cls().tools, cls.tasks("train")] for name, cls in envs.ENVS.items()],
            list(_random_conversations(episodes, random.Random(0)))]


def recipe_key(name):
    """A hash of what shapes the embedded model `name`: this file's code, less CACHE_ONLY, without comments and
    docstrings (the configs, the tokenizer, the templates, the warm-up and its settings), the toy environments'
    data, and for tiny-qwen qwen_offline.py's code, Qwen's BPE ranks and the transformers version whose
    converter reads them. Computed once a process for the same envs.ENVS (a class added at run time counts)."""
    memo = (name, tuple(envs.ENVS.items()))
    if memo not in _KEYS:
        _KEYS[memo] = _recipe_key(name)
    return _KEYS[memo]


_KEYS = {}  # recipe_key's, once a process for the same environments


def _recipe_key(name):
    leave_out = CACHE_ONLY + (QWEN_ONLY if name == "tiny" else ())
    parts = [name, code_text(sys.modules[__name__], leave_out=leave_out), environments_fingerprint()]
    if name == "tiny-qwen":
        import transformers
        ranks, _ = qwen_offline._qwen_ranks()
        with open(ranks, "rb") as f:
            parts += [code_text(qwen_offline), hashlib.sha256(f.read()).hexdigest(), transformers.__version__]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def cache_folder(name, seed, digest=""):
    """Where an embedded model lives: ~/.cache/seeupo (SEEUPO_CACHE overrides)/NAME-KEY[-DIGEST]-seedN."""
    root = os.environ.get("SEEUPO_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "seeupo"))
    return os.path.join(root, f"{name}-{recipe_key(name)}{f'-{digest}' if digest else ''}-seed{seed}")


def tiny_path(seed, digest=""):
    """The tiny model's folder for this seed (and a class of yours: its digest, LoadedEnv.digest)."""
    return cache_folder("tiny", seed, digest)


def tiny_qwen_path(seed):
    return cache_folder("tiny-qwen", seed)


def tiny_model(tokenizer, seed=0):
    """The tiny Qwen3, randomly initialised from the seed (before its warm-up)."""
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
                                        **TINY_CONFIG))


def warm_up(params, batches, steps, lr, loss_of, desc):
    """The warm-up of both embedded models, as pretraining would train them: AdamW on `params`, the lr
    decayed linearly to 0 over `steps`, one optimizer step per batch of random episodes on loss_of(batch), a
    next-token loss on their whole transcripts (predicting a reply, say "C has" after get(C), teaches
    in-context copying; the actions are uniform noise). Returns the last step's loss."""
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 1 - k / max(steps, 1))
    loss = torch.tensor(float("nan"))
    for batch in tqdm(batches, total=steps, desc=desc, unit="step", mininterval=2, dynamic_ncols=True):
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return loss.item()


def next_token_loss(model, token_budget=1024):
    """tiny's warm-up loss: the mean next-token loss over every token of a batch of episodes. A batch's episodes
    open alike (their environment's system prompt: about half of a toy episode), so that opening runs once and
    the rest of each episode attends to its keys and values, in micro-batches of similar length (at most
    token_budget padded tokens): the loss and gradient of one padded batch, to float rounding (tests/test_tiny.py),
    for much less arithmetic (docs/default.md)."""
    device = model.device

    def loss_of(episodes):
        ids = [e.token_ids for e in episodes]
        p = min(len(os.path.commonprefix(ids)), min(map(len, ids)) - 1)  # the opening; every episode goes on
        opening = torch.tensor([ids[0][:p]], device=device)
        shared = model(opening, use_cache=True)
        # the opening's own predictions are each episode's: computed once, counted once an episode
        logp_sum = shared.logits[0, :-1].log_softmax(-1).gather(-1, opening[0, 1:, None]).sum() * len(ids)
        for micro in micro_batches(range(len(ids)), [len(x) - p for x in ids], token_budget):
            rests = [ids[j][p:] for j in micro]
            n, width = len(rests), max(map(len, rests))
            tokens, mask = left_aligned(rests, width, device, dtype=torch.long)  # [n, width], padded on the right
            cache = DynamicCache([(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1))
                                  for layer in shared.past_key_values.layers])  # the opening's, shared
            logits = model(tokens, attention_mask=torch.cat([mask.new_ones(n, p), mask], 1).long(),
                           position_ids=torch.arange(p, p + width, device=device).expand(n, -1),
                           past_key_values=cache).logits
            # the opening's last state predicts each rest's first token
            logits = torch.cat([shared.logits[:, -1:].expand(n, -1, -1), logits[:, :-1]], 1)
            logp_sum = logp_sum + (logits.log_softmax(-1).gather(-1, tokens[..., None])[..., 0] * mask).sum()
        return -logp_sum / sum(len(x) - 1 for x in ids)
    return loss_of


def env_warm_up(model, tokenizer, env, rng, rehearse=True):
    """ENV_WARMUP on a class of yours (a LoadedEnv), every other step on the default's own environments
    unless rehearse=False (bench/warmup_copy.py's ablation). Returns the last step's loss."""
    rehearsal = default_draw(rng, ENV_WARMUP["episodes"])

    def draw(step):  # every other step the default's own environments: the model keeps what it could do
        if rehearse and step % 2:
            return rehearsal(step // 2)
        # a file may hold few rows
        return env.factory, rng.choices(env.train_tasks, k=ENV_WARMUP["episodes"])
    steps = (2 if rehearse else 1) * ENV_WARMUP["steps"]
    sampling = SamplingArgs(max_new_tokens=1024, max_context=4096)  # a turn is never cut here
    return warm_up(model.parameters(), warmup_batches(tokenizer, draw, steps, sampling, rng), steps,
                   ENV_WARMUP["lr"], next_token_loss(model), f"warm-up on {env.name}")


def call_tokens(tools):
    """The tokens a user environment's tiny model adds to the default one's: the tool-call tags (Qwen has
    them as tokens too) and, from the tools' schemas, each tool's call opening and each argument's key as
    json.dumps writes them, and the closing. The default BPE splits JSON at every quote and brace (63 tokens
    for one call of lookup_trl's get(locker); 7 with these), and its merges cannot be retrained without a new
    model."""
    tokens = ["<tools>", "</tools>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>",
              "}}\n</tool_call>"]
    for tool in tools or []:
        function = tool.get("function", tool)
        tokens.append('<tool_call>\n{"name": ' + json.dumps(function["name"]) + ', "arguments": {')
        tokens += [json.dumps(key) + ": " for key in function.get("parameters", {}).get("properties", {})]
    return list(dict.fromkeys(tokens))


def build_tiny(seed, env=None, log=print):
    """Create (or find in the cache) the warmed-up tiny model; returns its folder. env: a LoadedEnv of a class
    of yours -- then the default model of this seed (built first if need be) with `call_tokens` added, warmed
    up further on random episodes of that environment (env_warm_up)."""
    path = tiny_path(seed, env.digest if env else "")
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    base = build_tiny(seed, log=log) if env is not None else None

    def build(tmp):
        rng = random.Random(seed)
        if env is None:
            log(f"building the tiny default model (once; cached in {path}) ...")
            tokenizer = tiny_tokenizer(seed)
            model = tiny_model(tokenizer, seed)
            steps = TINY_WARMUP["steps"]
            batches = warmup_batches(tokenizer, default_draw(rng, TINY_WARMUP["episodes"]), steps,
                                     SamplingArgs(), rng)
            loss = warm_up(model.parameters(), batches, steps, TINY_WARMUP["lr"],
                           next_token_loss(model), "warm-up of tiny")
        else:
            log(f"warming the tiny model up on {env.name} (once; cached in {path}) ...")
            tokenizer, model = AutoTokenizer.from_pretrained(base), Qwen3ForCausalLM.from_pretrained(base)
            # (the default's, unless its folder was put there by hand)
            tokenizer.chat_template = TINY_CHAT_TEMPLATE
            add_tokens(model, tokenizer, call_tokens(env.factory().tools))
            loss = env_warm_up(model, tokenizer, env, rng)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        log(f"tiny model ready (warm-up loss {loss:.3f})")
    return built_once(path, build, log)


def build_tiny_qwen(seed=0, log=print):
    """Create (or find in the cache) the tiny-qwen folder for this seed: qwen_offline.build at
    TINY_QWEN_CONFIG, then warm_up_qwen; returns it."""
    path = tiny_qwen_path(seed)

    def build(tmp):
        log(f"building the tiny-qwen model (once; cached in {path}) ...")
        qwen_offline.build(tmp, seed, TINY_QWEN_CONFIG)
        warm_up_qwen(tmp, seed, log=log)
    return built_once(path, build, log)


def is_built(folder):
    """Whether a model folder is complete (its config.json is written last, by the rename into place)."""
    return os.path.exists(os.path.join(folder, "config.json"))


def built_once(path, build, log=print):
    """The model folder at `path`, made by build(tmp) if the cache lacks it, by one process at a time: a lock
    beside it (PATH.lock) makes a second process wait, saying so, then find the first one's folder. The build
    writes to a folder of its own and is renamed into place: a killed build never leaves half a model."""
    if is_built(path):
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"another process is building {os.path.basename(path)}; waiting for it to finish ...")
        lock.acquire()
    try:
        if not is_built(path):
            tmp = f"{path}.tmp{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)  # a killed build's leftovers
            build(tmp)
            os.rename(tmp, path)
    finally:
        lock.release()
    return path


def warm_up_qwen(path, seed=0, steps=None, log=print):
    """tiny's warm-up (the same random well-formed episodes, rendered with the Qwen3 template, thinking off as
    train.py's default) on the folder's model, saved back. The loss is the exact log-softmax over all V
    columns at the cost of a few hundred: the output rows of tokens the warm-up never shows are zero and held
    there, so their logits are exactly 0 and their V - |S| terms of the softmax's sum are V - |S| times e^0.
    Only the rows of the tokens it shows (S) and the decoder train. Tied embeddings (Qwen3-0.6B's, and
    tiny-qwen's) are one matrix: its rows of S train as both, the others are 0 as input and output alike."""
    steps = TINY_WARMUP["steps"] if steps is None else steps
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    rng = random.Random(seed)
    batches = warmup_batches(tokenizer, default_draw(rng, TINY_WARMUP["episodes"]), steps, SamplingArgs(),
                             rng, {"enable_thinking": False})
    data = [[e.token_ids for e in episodes] for episodes in batches]  # all of it first, to know S
    S = torch.tensor(sorted({tokenizer.pad_token_id}.union(*(ids for batch in data for ids in batch))))
    vocab = model.get_output_embeddings().weight.shape[0]
    column = torch.full((vocab,), -1, dtype=torch.long)
    column[S] = torch.arange(len(S))  # token id -> its row in the trained embedding and output rows
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    tied = embed is head
    shown_embed = torch.nn.Parameter(embed.detach()[S].clone())
    shown_head = shown_embed if tied else torch.nn.Parameter(head.detach()[S].clone())
    background = torch.tensor(float(vocab - len(S))).log()  # log sum of e^0 over the unshown columns
    decoder = model.get_decoder()
    decoder.embed_tokens.weight.requires_grad_(False)
    batch = Policy(model, tokenizer)._batch

    def loss_of(sequences):
        ids, attention, position_ids = batch(sequences)  # [B, L], left-padded
        rows = column[ids]
        # [B, L-1, H]: predicts ids[:, 1:]
        hidden = decoder(inputs_embeds=shown_embed[rows], attention_mask=attention,
                         position_ids=position_ids).last_hidden_state[:, :-1]
        logits = hidden @ shown_head.T  # [B, L-1, |S|]
        logp = (logits.gather(-1, rows[:, 1:, None])[..., 0]
                - torch.logaddexp(logits.logsumexp(-1), background))
        mask = attention[:, :-1].bool() & attention[:, 1:].bool()  # a real token predicting a real token
        return -(logp * mask).sum() / mask.sum()

    model.train()
    shown = [shown_embed] if tied else [shown_embed, shown_head]
    params = [p for p in decoder.parameters() if p.requires_grad] + shown
    loss = warm_up(params, data, steps, TINY_WARMUP["lr"], loss_of, "warm-up of tiny-qwen")
    with torch.no_grad():
        head[:] = 0.0  # (tied: the input rows of unshown tokens too)
        head[S] = shown_head
        embed[S] = shown_embed
    model.save_pretrained(path)
    log(f"tiny-qwen model warmed up ({steps} steps, |S| = {len(S)} tokens shown; loss {loss:.3f})")
    return path


def add_tokens(model, tokenizer, tokens):
    """New tokens, each with the mean of its pieces' input and output embeddings (what it spells), not
    noise."""
    pieces = {t: tokenizer(t, add_special_tokens=False)["input_ids"] for t in tokens}
    tokenizer.add_tokens(tokens)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for token, ids in pieces.items():
            new = tokenizer.convert_tokens_to_ids(token)
            for weights in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
                weights[new] = weights[ids].mean(0)
