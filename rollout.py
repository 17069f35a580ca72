"""The policy (a Qwen causal LM with a LoRA adapter) and grouped multi-turn episodes.

  load_policy(path)  a local folder or a Hub name of a Qwen2.5 / Qwen3 chat model (tiny.build_tiny() gives the
                     embedded offline default's folder); LoRA via peft on every attention and MLP projection,
                     QLoRA (a 4-bit NF4 base via bitsandbytes) wherever bitsandbytes runs it, CPU included. The
                     reference policy is the same model with the adapter disabled: no second copy of the weights.
  Policy             the model, its tokenizer and its temperature, the ONE place the temperature lives: sampling
                     and every log-probability use softmax(logits / temperature), the policy that samples.
  Policy.generate    batched sampling (left padding, KV cache) that also records each sampled token's log-prob
                     and the entropy of the distribution it was drawn from
  Policy.turn_logprobs  the callable seeupo.sweep() trains through (turn t's prefix only); without a gradient
                     it remembers what it computed for the weights it used, so the sweep's repeated no-grad
                     passes with unchanged weights cost nothing (docs/performance.md)
  rollout()          G episodes per task; each turn, ALL unfinished episodes in one batched generate call.
                     Sampled ids are kept as sampled (never decoded and re-encoded); environment replies
                     are appended as chat-template tokens, so training sees token for token what the
                     policy saw. An episode that would overflow the context is ended and marked truncated.
  turn_samples()     episodes -> seeupo.TurnSample lists (per turn, or whole episode for the baselines)
  SamplingArgs       the sampling flags train.py and eval.py share; .sampling() -> the Sampling rollout() takes

How it connects: rollout() gets its environments from a factory, a zero-argument callable that returns a
fresh environment for one episode (e.g. functools.partial(envs.make_env, "lookup")), so this file needs
nothing from envs.py; the environment interface is described there. seeupo.py gives it TurnSample only.
"""

import logging
import os
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import transformers
from transformers import (AutoConfig, AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList,
                          TemperatureLogitsWarper, TopPLogitsWarper)

from seeupo import TurnSample

# quiet imports and loads: bitsandbytes' CPU backend warns that an optional kernel package (`kernels`, which
# fetches from the Hub) is missing, peft about a rename
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.*is deprecated")  # peft's kbit prep
transformers.utils.logging.disable_progress_bar()

END_OF_TURN = "<|im_end|>"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ----------------------------------------------------------------------------- loading the policy
def check_model(name):
    """A local folder, or a Hub name whose config can be reached; else one line that names the fix."""
    if os.path.isdir(name):
        return
    try:
        AutoConfig.from_pretrained(name)
    except Exception as e:  # offline Hub, typo, gated repo: all end here
        raise SystemExit(f"error: cannot load model '{name}' ({type(e).__name__}); give a local folder, download it "
                         f"first (`hf download {name}`, then HF_HUB_OFFLINE=1), or use --model tiny")


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
                         f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); drop --qlora "
                         f"(LoRA on a full-precision base), or run on a CUDA GPU or a CPU")


def load_policy(path, seed=0, adapter=None, lora_r=16, lora_alpha=32, lora_dropout=0.0, qlora=False, bf16=False,
                gradient_checkpointing=False, thinking=False, temperature=1.0, device="cpu"):
    """The policy: base model + LoRA adapter (new, or loaded from the `adapter` folder). `path`: a local model
    folder or a Hub name (`tiny.build_tiny(seed)` builds the embedded default and returns its folder)."""
    from peft import LoraConfig, PeftModel, get_peft_model
    check_model(path)
    if qlora:
        check_4bit(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise SystemExit(f"error: model '{path}' has no chat template; use an instruct (chat) model")
    dtype = torch.bfloat16 if bf16 else torch.float32
    kwargs = {}
    if qlora:
        from transformers import BitsAndBytesConfig
        kwargs = dict(device_map={"": device}, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    if qlora:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
        for module in model.modules():  # bitsandbytes' CPU backend multiplies in bf16 in eval mode without a
            if hasattr(module, "support_avx512bf16_for_cpu"):  # gradient (sampling), in fp32 when training:
                module.support_avx512bf16_for_cpu = False  # log-probs 2.5e-4 apart. One path: sampled = trained
    elif gradient_checkpointing:
        # use_reentrant=False, or no gradient reaches the adapter when the inputs need none
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    torch.manual_seed(seed)  # the same adapter init on every rank
    if adapter:
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                                                 target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    if not qlora:  # a 4-bit model is already placed by device_map, and refuses .to()
        model = model.to(device)
    return Policy(model, tokenizer, temperature=temperature, chat_kwargs={"enable_thinking": thinking})


@dataclass
class Sampling:
    """How rollout() samples (the temperature is the Policy's: it decides the log-probs too)."""
    top_p: float = 1.0
    max_new_tokens: int = 16   # per turn
    max_context: int = 1024    # an episode that would grow past this is ended, marked truncated
    batch_size: int = 256      # the most sequences in one generate call


@dataclass
class SamplingArgs:
    """The sampling flags, with their defaults and help: train.Args and eval.EvalArgs inherit them."""
    temperature: float = field(default=0.7, metadata={
        "help": "sampling temperature, and that of every log-prob (0 = greedy, log-probs at 1; the authors: 0.9)"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling"})
    max_new_tokens: int = field(default=16, metadata={
        "help": "most tokens per turn; a turn without an end-of-turn token ends the episode"})
    max_context: int = field(default=1024, metadata={
        "help": "most tokens per episode; an episode that would overflow ends, truncated"})
    gen_batch_size: int = field(default=256, metadata={"help": "most sequences generated at once"})
    thinking: bool = field(default=False, metadata={"help": "Qwen3: let the model think (<think> blocks)"})

    def sampling(self):
        """These flags as the Sampling that rollout() takes (temperature and thinking go to load_policy)."""
        return Sampling(top_p=self.top_p, max_new_tokens=self.max_new_tokens, max_context=self.max_context,
                        batch_size=self.gen_batch_size)


class _Record(LogitsProcessor):
    """Records, for each sampled token, log pi(token) and the entropy of pi, from the logits / temperature
    (before top-p, as verl and TRL do), keeping one [B, V] row at a time: at step k+1 it sees the token drawn
    at step k."""

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
    """TurnSample.data for an LLM: which tokens of an episode to score, and the forward pass that scores them."""
    ids: list        # the episode's token ids: ONE list, shared by all its samples
    end: int         # the forward pass reads ids[:end] (a turn's prefix ends with its action)
    positions: list  # the tokens to score: a turn's action, or every action token of the episode
    policy: list     # every policy token in ids[:end] (a no-grad pass scores and remembers them all)


class Policy:
    """A causal LM (usually a peft LoRA model), its tokenizer and its temperature, as rollout() and seeupo.sweep()
    use it. pi = softmax(logits / temperature) is the policy that samples and whose log-probs are trained, so
    the sweep's ratios and KL are those of the sampling policy; temperature 0 samples greedily (log-probs at 1)."""

    def __init__(self, model, tokenizer, temperature=1.0, chat_kwargs=None):
        self.model, self.tokenizer, self.chat_kwargs = model, tokenizer, chat_kwargs or {}
        self.temperature = temperature
        self.stop_ids = sorted({tokenizer.convert_tokens_to_ids(END_OF_TURN), tokenizer.eos_token_id} - {None})
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        # no-grad log-probs, for the weights they were computed with: {(id of an episode's ids, reference):
        # (those ids, the weights, {position: log pi})}; emptied when rollout() plays new episodes
        self.remembered = {}

    @property
    def device(self):
        return next(self.model.parameters()).device

    def _batch(self, sequences):
        """Left-padded ids, attention mask and position ids (as generate() numbers them), each [B, L]."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        for i, s in enumerate(sequences):
            ids[i, width - len(s):] = torch.tensor(s)
            attention[i, width - len(s):] = 1
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
        for k in range(0, len(contexts), sampling.batch_size):
            ids, attention, _ = self._batch(contexts[k : k + sampling.batch_size])
            recorder = _Record()
            processors = []  # generate() itself adds no processor: it samples at temperature 1, top-p 1
            if self.temperature > 0 and self.temperature != 1:
                processors.append(TemperatureLogitsWarper(self.temperature))
            processors.append(recorder)
            if self.temperature > 0 and sampling.top_p < 1:
                processors.append(TopPLogitsWarper(sampling.top_p))
            with self._adapter(reference):
                sequences = self.model.generate(
                    input_ids=ids, attention_mask=attention, do_sample=self.temperature > 0, temperature=1.0,
                    top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=sampling.max_new_tokens,
                    eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
                    logits_processor=LogitsProcessorList(processors))
            new = sequences[:, ids.shape[1]:]
            recorder.take(new[:, -1])
            logprobs, entropies = torch.stack(recorder.logprobs, 1).tolist(), torch.stack(recorder.entropies, 1).tolist()
            for row, row_logprobs, row_entropies in zip(new.tolist(), logprobs, entropies):
                n = next((i + 1 for i, t in enumerate(row) if t in self.stop_ids), len(row))
                out.append((row[:n], row_logprobs[:n], row_entropies[:n]))
        return out

    def turn_logprobs(self, samples, reference=False):
        """seeupo's logprob_fn: log pi(token | everything before it) for the `positions` of each sample's Actions.
        Returns logp [B, A] (float32, 0 on padding) and mask [B, A] (bool), A = the most positions of a sample.

        With a gradient (an optimizer step) it runs the forward pass. Without one, it answers from what an earlier
        no-grad pass computed with the same weights, where it can: such a pass scores EVERY policy token of its
        prefix, so the pass on turn t+1's prefix also holds turn t's log-probs (the sweep's `new` of turn t+1 and
        `old` of turn t, in reverse order), and the reference policy's never change. The values agree with a
        pass of their own to float rounding (~1e-7; tests/test_rollout.py)."""
        if torch.is_grad_enabled():
            return self._score(samples, [s.data.positions for s in samples], reference)
        weights = None if reference else tuple(p._version for p in self.model.parameters() if p.requires_grad)

        def memory(s):  # the log-probs remembered for this sample's episode, if computed with these weights
            entry = self.remembered.get((id(s.data.ids), reference))
            return entry[2] if entry is not None and entry[1] == weights else {}

        todo = [s for s in samples if not all(q in memory(s) for q in s.data.positions)]
        if todo:
            logp, _ = self._score(todo, [s.data.policy for s in todo], reference)
            for s, row in zip(todo, logp.tolist()):
                if not memory(s):  # an optimizer step since (the version counters moved): forget the old values
                    self.remembered[id(s.data.ids), reference] = (s.data.ids, weights, {})
                memory(s).update(zip(s.data.policy, row))
        width = max(len(s.data.positions) for s in samples)
        logp = torch.zeros(len(samples), width)
        mask = torch.zeros(len(samples), width, dtype=torch.bool)
        for i, s in enumerate(samples):
            logp[i, : len(s.data.positions)] = torch.tensor([memory(s)[q] for q in s.data.positions])
            mask[i, : len(s.data.positions)] = True
        return logp.to(self.device), mask.to(self.device)

    def forget(self):
        """Drop the remembered log-probs (rollout() calls it: new episodes)."""
        self.remembered.clear()

    def _score(self, samples, positions, reference):
        """The forward pass: log pi of the tokens at `positions` (one list per sample) of each sample's prefix.
        Sequences are left-padded as in generate(), so the logits needed are the last ones: only those are
        computed (logits_to_keep), and the log-softmax only on the rows that predict a scored token."""
        self.model.train(torch.is_grad_enabled())  # dropout and gradient checkpointing only when training
        prefixes = [s.data.ids[: s.data.end] for s in samples]
        ids, attention, position_ids = self._batch(prefixes)  # [B, L]
        B, L = ids.shape
        columns = [[L - len(p) + q for q in pos] for p, pos in zip(prefixes, positions)]  # of each token in ids
        keep = L - min(c[0] for c in columns) + 1  # from the logit that predicts the earliest scored token
        with self._adapter(reference):
            logits = self.model(input_ids=ids, attention_mask=attention, position_ids=position_ids,
                                logits_to_keep=keep, use_cache=False).logits  # [B, keep, V]: columns L-keep..L-1
        A = max(len(c) for c in columns)
        column = torch.zeros(B, A, dtype=torch.long)  # [B, A]: the scored tokens' columns (0 on padding)
        mask = torch.zeros(B, A, dtype=torch.bool)
        for i, c in enumerate(columns):
            column[i, : len(c)], mask[i, : len(c)] = torch.tensor(c), True
        column, mask = column.to(ids.device), mask.to(ids.device)
        row = torch.where(mask, column - 1 - (L - keep), 0)  # [B, A]: the logit row that predicts each token
        tokens = ids.gather(1, column)  # [B, A]
        batch = torch.arange(B, device=ids.device)[:, None]
        logp = (logits[batch, row].float() / (self.temperature or 1.0)).log_softmax(-1)  # [B, A, V]
        return logp.gather(-1, tokens[..., None])[..., 0] * mask, mask


class ScriptedPolicy(Policy):
    """Stands in for a model in rollout(): `script(episode)` writes each turn, as text (an end-of-turn token
    is appended) or as raw ids (kept as they are). Used by the tiny model's warm-up and by tests."""

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
    outcome: str = ""           # why it ended: the environment's last reply, or what cut it short
    env: object = field(default=None, repr=False)

    @property
    def action_mask(self):
        """True exactly on the policy's own tokens: the only ones that carry loss."""
        mask = [False] * len(self.token_ids)
        for start, end in self.turn_spans:
            mask[start:end] = [True] * (end - start)
        return mask


def _defang(messages, tokenizer):
    """Environment text must not smuggle in special tokens (say, an echo of the model's own '<|im_end|>')."""
    out = []
    for m in messages:
        content = m.get("content") or ""
        for special in tokenizer.all_special_tokens:
            content = content.replace(special, special[0] + " " + special[1:])
        out.append({**m, "content": content})
    return out


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


def check_context(policy, env, task, sampling):
    """Stop before any rollout, in one line, if even the first prompt and one turn do not fit."""
    n = len(render_prompt(policy.tokenizer, env.reset(task), env.tools, policy.chat_kwargs))
    if n + sampling.max_new_tokens > sampling.max_context:
        raise SystemExit(f"error: the first prompt has {n} tokens, and a turn up to {sampling.max_new_tokens} more: "
                         f"raise --max_context above {n + sampling.max_new_tokens}")


def rollout(policy, env_factory, tasks, group_size, sampling, reference=False):
    """Play group_size episodes of every task; each turn, every unfinished episode in ONE generate call.
    env_factory() returns a fresh environment for each episode, e.g. functools.partial(envs.make_env, "lookup")."""
    tokenizer, episodes = policy.tokenizer, []
    policy.forget()  # log-probs remembered for earlier episodes are of no more use
    for group, task in enumerate(tasks):
        for _ in range(group_size):
            env = env_factory()
            prompt = render_prompt(tokenizer, env.reset(task), env.tools, policy.chat_kwargs)
            episodes.append(Episode(group=group, task=task, token_ids=prompt, env=env))
    while True:
        for e in episodes:
            if not e.done and len(e.token_ids) + sampling.max_new_tokens > sampling.max_context:
                e.done = e.truncated = True  # the next turn might not fit: end here, reward 0
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
                e.unterminated += 1
                e.done = True
                e.outcome = f"no end-of-turn token within --max_new_tokens {sampling.max_new_tokens}"
                continue
            text = tokenizer.decode(ids[:-1])
            reply, e.done, reward, info = e.env.step(text)
            e.malformed += bool(info.get("malformed"))
            if e.done:
                e.reward, e.success = float(reward), bool(info.get("success", reward > 0))
                e.outcome = " | ".join(m.get("content") or "" for m in reply)
            else:
                e.token_ids = e.token_ids + render_reply(tokenizer, reply, policy.chat_kwargs)


def turn_samples(episodes, whole_episode=False):
    """seeupo.TurnSample lists: one per (episode, turn) on that turn's prefix, or one per episode (every action
    token, on the whole episode). Each carries the log-probs its tokens were sampled with."""
    out = []
    for j, e in enumerate(episodes):
        spans = e.turn_spans
        if whole_episode and spans:
            positions = [q for start, end in spans for q in range(start, end)]
            out.append(TurnSample(j, -1, spans[-1][1], Actions(e.token_ids, spans[-1][1], positions, positions),
                                  sum(e.sample_logprobs, [])))
        elif not whole_episode:
            for t, (start, end) in enumerate(spans):
                policy = [q for first, last in spans[: t + 1] for q in range(first, last)]  # turns 0..t
                out.append(TurnSample(j, t, end, Actions(e.token_ids, end, list(range(start, end)), policy),
                                      e.sample_logprobs[t]))
    return out
