"""The policy (a Qwen causal LM with a LoRA adapter) and grouped multi-turn episodes.

  PolicyArgs, SamplingArgs   the policy's and the sampling's flags (train.Args and eval.EvalArgs inherit
                     them)
  load_policy(path)  a local folder or Hub name of a Qwen2.5 / Qwen3 chat model, LoRA (peft) on every
                     projection; QLoRA (a 4-bit NF4 base, bitsandbytes) on CUDA or a CPU. The reference
                     policy: the adapter off.
  Policy             the model, its tokenizer and its temperature, the ONE place the temperature lives:
                     sampling and every log-probability use softmax(logits / temperature), the policy that
                     samples.
  Policy.generate    batched sampling (left padding, KV cache) that also records each sampled token's
                     log-prob and the entropy of the distribution it was drawn from
  Policy.turn_logprobs  what seeupo.sweep() trains through: turn t's forward on turn t's prefix, the
                     log-softmax on scored rows only (support/sweep_tools.LogprobCache: the same, remembering
                     its no-grad passes' results)
  rollout()          G episodes per task; each turn, ALL unfinished episodes in one batched generate call.
                     Sampled ids are kept as sampled (never re-encoded), replies appended as chat-template
                     tokens: training sees token for token what the policy saw. An episode that would
                     overflow ends, truncated.
  turn_samples()     episodes -> seeupo.TurnSample lists (per turn, or whole episode for the baselines)

How it connects: rollout() gets its environments from a factory, a zero-argument callable that returns a
fresh environment for one episode (e.g. functools.partial(envs.make_env, "lookup")), so this file needs
nothing from envs.py; the environment interface is described there. seeupo.py gives it TurnSample only.
"""

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import transformers
from torch.utils.checkpoint import checkpoint
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, LogitsProcessor,
                          LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper)

from seeupo import ALL_TURNS, TurnSample, knob
from support.sweep_tools import left_aligned

transformers.utils.logging.disable_progress_bar()  # one small model loads and saves without a progress bar
END_OF_TURN = "<|im_end|>"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SCORED_ELEMENTS = 2**24  # a chunk of scored rows' [rows, V] float32 logits: 64 MiB (110 rows at V = 151,936)


@dataclass
class PolicyArgs:
    """How the policy is built and what it samples at; load_policy() takes these."""
    temperature: float = knob(0.7, "sampling temperature, and that of every log-prob (0 = greedy, log-probs "
                                   "at 1; the authors: 0.9)")
    thinking: bool = knob(False, "Qwen3: let the model think (<think> blocks)")
    lora_r: int = knob(8, "LoRA rank")
    lora_alpha: int = knob(16, "LoRA alpha")
    lora_dropout: float = knob(0.0, "LoRA dropout")
    qlora: bool = knob(False, "QLoRA: a 4-bit NF4 base via bitsandbytes (CUDA or CPU)")
    bf16: bool = knob(False, "bfloat16 base weights (GPU)")
    gradient_checkpointing: bool = knob(False, "recompute activations in the backward pass")


@dataclass
class SamplingArgs:
    """How rollout() samples (the temperature is the Policy's: it decides the log-probs too)."""
    top_p: float = knob(1.0, "nucleus sampling")
    max_new_tokens: int = knob(16, "most tokens per turn; a turn without an end-of-turn token ends the "
                                   "episode")
    max_context: int = knob(1024, "most tokens per episode; an episode that would overflow ends, truncated")
    gen_batch_size: int = knob(256, "most sequences generated at once")


def check_model(name):
    """A local folder, or a Hub name whose config can be reached; else one line that names the fix."""
    if os.path.isdir(name):
        return
    try:
        AutoConfig.from_pretrained(name)
    except Exception as e:  # offline Hub, typo, gated repo: all end here
        raise SystemExit(f"error: cannot load model '{name}' ({type(e).__name__}); give a local folder, "
                         f"download it first (`hf download {name}`, then HF_HUB_OFFLINE=1), "
                         f"or use --model tiny")


def check_4bit(device):
    """QLoRA needs bitsandbytes' 4-bit layers on this device (CUDA, and its CPU backend): try one, forward and
    backward, and say in one line if they do not run here."""
    try:
        import bitsandbytes as bnb
        layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type="nf4").to(device)
        x = torch.ones(2, 64, device=device, requires_grad=True)
        layer(x).sum().backward()
    except Exception as e:  # noqa: BLE001 -- whatever the backend raises, the fix is the same
        raise SystemExit(f"error: --qlora: bitsandbytes' 4-bit layers do not run on '{device}' here "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                         f"drop --qlora (LoRA on a full-precision base), or run on a CUDA GPU or a CPU")


def load_policy(path, args=None, seed=0, adapter=None, device="cpu"):
    """The policy: base model + LoRA adapter (new, or loaded from the `adapter` folder). `path`: a local model
    folder or a Hub name; `args`: PolicyArgs (or train.Args, which inherits them)."""
    # bitsandbytes' CPU backend warns at import that the optional `kernels` (fetches from the Hub) is missing
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    args = args or PolicyArgs()
    check_model(path)
    if args.qlora:
        check_4bit(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise SystemExit(f"error: model '{path}' has no chat template; use an instruct (chat) model")
    dtype, kwargs = torch.bfloat16 if args.bf16 else torch.float32, {}
    if args.qlora:
        kwargs = dict(device_map={"": device}, quantization_config=transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    checkpointing = {"use_reentrant": False}  # or no gradient reaches the adapter when the inputs need none
    if args.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=checkpointing)
        # bitsandbytes' CPU path: bf16 sampling, fp32 training; one path, sampled = trained (docs/scaling.md)
        for module in model.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    elif args.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    torch.manual_seed(seed)  # the same adapter init on every rank
    model = PeftModel.from_pretrained(model, adapter, is_trainable=True) if adapter else get_peft_model(
        model, LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                          target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    if not args.qlora:  # a 4-bit model is already placed by device_map, and refuses .to()
        model = model.to(device)
    return Policy(model, tokenizer, temperature=args.temperature,
                  chat_kwargs={"enable_thinking": args.thinking})


class _SamplingRecorder(LogitsProcessor):
    """Records each sampled token's log pi and pi's entropy, from the logits / temperature (before top-p, as
    verl and TRL do), one [B, V] row at a time: at step k+1 it sees the token drawn at step k."""

    def __init__(self):
        self.last, self.logprobs, self.entropies = None, [], []

    def __call__(self, input_ids, scores):
        self.take(input_ids[:, -1])
        self.last = scores.float().log_softmax(-1)
        return scores

    def take(self, tokens):
        if self.last is not None:
            self.logprobs.append(self.last.gather(1, tokens[:, None])[:, 0])
            self.entropies.append(torch.special.entr(self.last.exp()).sum(-1))  # -sum p log p, 0 where p = 0
            self.last = None


class Actions(NamedTuple):
    """TurnSample.data for an LLM: which tokens of an episode to score, and the forward pass that scores
    them."""
    ids: list        # the episode's token ids: ONE list, shared by all its samples
    end: int         # the forward pass reads ids[:end] (a turn's prefix ends with its action)
    positions: list  # the tokens to score: a turn's action, or every action token of the episode
    policy_positions: list  # every policy token in ids[:end] (a remembering no-grad pass scores them all)


class Policy:
    """A causal LM (usually a peft LoRA model), its tokenizer and its temperature, as rollout() and
    seeupo.sweep() use it. pi = softmax(logits / temperature) is the policy that samples and whose log-probs
    are trained, so the sweep's ratios and KL are those of the sampling policy; temperature 0 samples greedily
    (log-probs at 1)."""

    def __init__(self, model, tokenizer, temperature=1.0, chat_kwargs=None):
        self.model, self.tokenizer, self.chat_kwargs = model, tokenizer, chat_kwargs or {}
        self.temperature = temperature
        stops = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # Qwen3: 2 of them
        stops = [tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id,
                 *(stops if isinstance(stops, list) else [stops])]
        self.stop_ids = [t for t in dict.fromkeys(stops) if t is not None]  # every one ends a turn
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _batch(self, sequences):
        """Left-padded ids, attention mask and position ids (as generate() numbers them), each [B, L]: the
        left padding puts every sequence's last token in the last column."""
        ids = torch.full((len(sequences), max(len(s) for s in sequences)), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, s in enumerate(sequences):
            ids[i, ids.shape[1] - len(s):], attention[i, ids.shape[1] - len(s):] = torch.tensor(s), 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), attention.to(self.device), positions.to(self.device)

    def _adapter(self, reference):
        return self.model.disable_adapter() if reference else nullcontext()

    def act(self, episodes, sampling, reference=False):
        """One turn for each episode: [(new ids, their log-probs, their entropies)]."""
        return self.generate([e.token_ids for e in episodes], sampling, reference)

    @torch.no_grad()
    def generate(self, contexts, sampling, reference=False):
        """Sample one turn for each context. Returns [(new_ids, log pi of each at sampling time, entropy of pi
        there)], each cut after its first end-of-turn token (a turn that hit max_new_tokens has none)."""
        self.model.eval()
        out = []
        for k in range(0, len(contexts), sampling.gen_batch_size):
            ids, attention, _ = self._batch(contexts[k : k + sampling.gen_batch_size])
            # generate() itself samples at temperature 1, top-p 1
            recorder, sampled = _SamplingRecorder(), self.temperature > 0
            processors = ([TemperatureLogitsWarper(self.temperature)]
                          if sampled and self.temperature != 1 else []) \
                + [recorder] + ([TopPLogitsWarper(sampling.top_p)] if sampled and sampling.top_p < 1 else [])
            with self._adapter(reference):
                sequences = self.model.generate(
                    input_ids=ids, attention_mask=attention, do_sample=sampled, temperature=1.0,
                    top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=sampling.max_new_tokens,
                    eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                    logits_processor=LogitsProcessorList(processors))
            new = sequences[:, ids.shape[1]:]
            recorder.take(new[:, -1])
            logprobs, entropies = (torch.stack(x, 1).tolist()
                                   for x in (recorder.logprobs, recorder.entropies))
            for row, row_logprobs, row_entropies in zip(new.tolist(), logprobs, entropies):
                n = next((i + 1 for i, t in enumerate(row) if t in self.stop_ids), len(row))
                out.append((row[:n], row_logprobs[:n], row_entropies[:n]))
        return out

    def turn_logprobs(self, samples, reference=False):
        """seeupo's logprob_fn: log pi(token | everything before it) for the `positions` of each sample's
        Actions, one forward pass on each prefix: logp [B, A] (float32, 0 on padding), mask [B, A] (A: the
        most positions)."""
        return self._score(samples, [s.data.positions for s in samples], reference)

    def _score(self, samples, positions, reference):
        """The forward pass: log pi of the tokens at `positions` (one list per sample) of each sample's
        prefix. The output layer and log-softmax (151,936 columns for Qwen) run only on the states that
        predict a scored token, a chunk at a time, recomputed in the backward: no [B, L, V] or [B, A, V]
        tensor (docs/performance.md)."""
        self.model.train(torch.is_grad_enabled())  # dropout and gradient checkpointing only when training
        # ids, attention, position_ids: [B, L]
        ids, attention, position_ids = self._batch(prefixes := [s.data.ids[: s.data.end] for s in samples])
        columns = [[ids.shape[1] - len(p) + q for q in pos] for p, pos in zip(prefixes, positions)]  # in ids
        # column, mask: [B, A]
        column, mask = left_aligned(columns, max(len(c) for c in columns), ids.device, dtype=torch.long)
        # the model under peft's wrapper
        lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # a causal LM's logits are its output layer on the decoder's last states
        with self._adapter(reference):
            hidden = lm.get_decoder()(input_ids=ids, attention_mask=attention, position_ids=position_ids,
                                      use_cache=False).last_hidden_state  # [B, L, H]
        b, c = mask.nonzero(as_tuple=True)[0], column[mask]  # each scored token's sample and column, in order
        # states [N, H]: the state that predicts each token; tokens [N, 1]
        states, tokens = hidden[b, c - 1], ids[b, c, None]
        head, n = (lm.get_output_embeddings(),
                   max(1, SCORED_ELEMENTS // lm.get_output_embeddings().out_features))
        # [n, H], [n, 1] -> log softmax(logits / temperature) at the token, [n, 1]
        def token_logprob(h, token):
            return (head(h).float() / (self.temperature or 1.0)).log_softmax(-1).gather(-1, token)
        flat = torch.cat([checkpoint(token_logprob, states[k : k + n], tokens[k : k + n], use_reentrant=False)
                          for k in range(0, len(tokens), n)])[:, 0]
        return torch.zeros(mask.shape, device=ids.device).masked_scatter(mask, flat), mask


# ----------------------------------------------------------------------------- episodes
@dataclass
class Episode:
    group: int                  # index of its task in the batch; a group's episodes share the task
    task: dict
    token_ids: list             # everything the policy saw and wrote, in order
    turn_spans: list = field(default_factory=list)       # [start, end) of each policy turn in token_ids
    sample_logprobs: list = field(default_factory=list)  # per turn: log pi(token) when it was sampled
    sample_entropy: list = field(default_factory=list)   # per turn: the entropy of pi at each sampled token
    reward: float = 0.0
    success: bool = False
    done: bool = False
    truncated: bool = False     # ended by the context limit, not by the environment
    malformed: int = 0          # turns the environment could not parse
    unterminated: int = 0       # turns cut at max_new_tokens without an end-of-turn token
    cut: str = ""               # the limit that ended it, if any: max_turns, max_context, max_new_tokens
    outcome: str = ""           # why it ended: the environment's last reply, or what cut it short
    env: object = field(default=None, repr=False)


def _defang(messages, tokenizer):
    """Environment text must not smuggle in special tokens (say, an echo of the model's own '<|im_end|>')."""
    def defanged(text):
        for special in tokenizer.all_special_tokens:
            text = text.replace(special, special[0] + " " + special[1:])
        return text
    return [{**m, "content": defanged(m.get("content") or "")} for m in messages]


def render_prompt(tokenizer, messages, tools=None, chat_kwargs=None):
    """The first prompt's ids, ending with the assistant header (the generation prompt)."""
    text = tokenizer.apply_chat_template(_defang(messages, tokenizer), tools=tools, tokenize=False,
                                         add_generation_prompt=True, **(chat_kwargs or {}))
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def render_reply(tokenizer, reply, chat_kwargs=None):
    """The ids that follow the policy's end-of-turn token: the reply messages as the chat template writes
    them, then the next assistant header. Read off a rendering of a stand-in conversation, so the earlier
    turns are never re-rendered (Qwen3's template would rewrite them, e.g. drop <think> blocks)."""
    mark = "SEEUPO-STAND-IN-TURN"
    stand_in = [{"role": "user", "content": "?"}, {"role": "assistant", "content": mark}]
    text = tokenizer.apply_chat_template(stand_in + _defang(reply, tokenizer), tokenize=False,
                                         add_generation_prompt=True, **(chat_kwargs or {}))
    cut = text.index(END_OF_TURN, text.index(mark)) + len(END_OF_TURN)
    return tokenizer(text[cut:], add_special_tokens=False)["input_ids"]


def rollout(policy, env_factory, tasks, group_size, sampling, reference=False):
    """Play group_size episodes of every task; each turn, every unfinished episode in ONE generate call.
    env_factory() returns a fresh environment for each episode, e.g. functools.partial(envs.make_env,
    "lookup"); sampling: SamplingArgs (or train.Args, which inherits them)."""
    tokenizer, episodes = policy.tokenizer, []
    for group, task in enumerate(tasks):
        for _ in range(group_size):
            env = env_factory()
            prompt = render_prompt(tokenizer, env.reset(task), env.tools, policy.chat_kwargs)
            episodes.append(Episode(group=group, task=task, token_ids=prompt, env=env))
    while True:
        for e in episodes:
            if not e.done and len(e.token_ids) + sampling.max_new_tokens > sampling.max_context:
                e.done = e.truncated = True  # the next turn might not fit: end here, reward 0
                e.cut = "max_context"
                e.outcome = f"truncated: the next turn could pass --max_context {sampling.max_context}"
        active = [e for e in episodes if not e.done]
        if not active:
            return episodes
        for e, (ids, logprobs, entropies) in zip(active, policy.act(active, sampling, reference)):
            start = len(e.token_ids)
            e.token_ids = e.token_ids + ids
            e.turn_spans.append((start, len(e.token_ids)))
            e.sample_logprobs.append(logprobs)
            e.sample_entropy.append(entropies)
            if not ids or ids[-1] not in policy.stop_ids:  # an endless turn: end the episode, reward 0
                e.unterminated, e.done, e.cut = e.unterminated + 1, True, "max_new_tokens"
                e.outcome = f"no end-of-turn token within --max_new_tokens {sampling.max_new_tokens}"
                continue
            text = tokenizer.decode(ids[:-1])
            reply, e.done, reward, info = e.env.step(text)
            e.malformed += bool(info.get("malformed"))
            e.cut = "max_turns" if info.get("cut_by_max_turns") else e.cut
            if e.done:
                e.reward, e.success = float(reward), bool(info.get("success", reward > 0))
                e.outcome = " | ".join(m.get("content") or "" for m in reply)
            else:
                e.token_ids = e.token_ids + render_reply(tokenizer, reply, policy.chat_kwargs)


def turn_samples(episodes, whole_episode=False):
    """seeupo.TurnSample lists: one per (episode, turn) on that turn's prefix, or one per episode (every
    action token, on the whole episode). Each carries the log-probs its tokens were sampled with."""
    out = []
    for j, e in enumerate(episodes):
        spans = e.turn_spans
        if whole_episode and spans:
            positions = [q for start, end in spans for q in range(start, end)]
            out.append(TurnSample(j, ALL_TURNS, spans[-1][1],
                                  Actions(e.token_ids, spans[-1][1], positions, positions),
                                  sum(e.sample_logprobs, [])))
        elif not whole_episode:
            for t, (start, end) in enumerate(spans):
                # every policy token of turns 0..t
                policy_positions = [q for first, last in spans[: t + 1] for q in range(first, last)]
                out.append(TurnSample(j, t, end,
                                      Actions(e.token_ids, end, list(range(start, end)), policy_positions),
                                      e.sample_logprobs[t]))
    return out
