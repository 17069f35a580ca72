"""A random-init model of a real Qwen2.5 shape, saved as a folder with the tiny model's tokenizer.

    python bench/random_init.py --config qwen2.5-0.5b --out /tmp/qwen2.5-0.5b-random   [--device cuda]
    python train.py --model /tmp/qwen2.5-0.5b-random --bf16 ...     # then it is just a local model

No weights can be downloaded here, but the time and memory of a step depend on the shape, not on the
values. Saving the model as a folder means the benchmarks (bench/speed.py, the BFCL run on a GPU) load it
through rollout.load_policy() like any checkpoint -- LoRA, QLoRA 4-bit, bf16, gradient checkpointing: the
code path of a real Qwen run. The tiny tokenizer's ~200 ids fit any vocabulary; the text is noise, so an
episode ends after its first turn (no end-of-turn token is ever written).
"""

import argparse
import os
import shutil
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from support import tiny  # noqa: E402

# the shapes of Qwen2.5's config.json files
CONFIGS = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}


def save_random_init(name, folder, seed=0, device="cpu"):
    """Build (on `device`, in bf16) and save the model once; returns the folder."""
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    tokenizer = AutoTokenizer.from_pretrained(tiny.build_tiny(seed))
    config = Qwen2Config(**CONFIGS[name], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    with torch.device(device):  # a 7B init is minutes on a CPU, seconds on a GPU
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = f"{folder}.tmp{os.getpid()}"
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--device", default="cpu", help="where to initialise the weights (cuda: much faster)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(save_random_init(a.config, a.out, a.seed, a.device))
