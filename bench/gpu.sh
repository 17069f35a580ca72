#!/bin/bash
# The GPU checks, in one run on a CUDA machine without Hub access (bench/results/gpu_*.md came from it):
#   bash bench/gpu.sh OUT_DIR
# 1-2. bench/speed.py on a random-init Qwen2.5-0.5B shape: LoRA (bf16 base) and QLoRA (4-bit NF4 base).
# 3.   a short SeeUPO run on BFCL multi_turn_base at real prompt lengths with that model (train.py, --env bfcl).
# 4.   bench/speed.py on a random-init Qwen2.5-7B shape with QLoRA: what one GPU holds for a 7B run.
# Each part has its own time limit; one that fails does not stop the others. PARTS="a b" runs only those.
# On a GPU the one-episode-at-a-time rollout is slow (every decode step pays HF generate()'s and peft's
# per-layer Python overhead), so the rollout comparison uses 2 tasks x G=8 here.
OUT=${1:?usage: bash bench/gpu.sh OUT_DIR}
PARTS=${PARTS:-"speed_05b_lora speed_05b_qlora bfcl_05b speed_7b_qlora"}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SEEUPO_CACHE=${SEEUPO_CACHE:-$PWD/.gpucache} TOKENIZERS_PARALLELISM=false
MODELS=/tmp/seeupo-models
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, peft, accelerate, bitsandbytes as b; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__, '| bitsandbytes', b.__version__)" | tee -a "$OUT/device.txt"

part() {  # part NAME SECONDS COMMAND...: run it, time it, keep its log
  local name=$1 limit=$2; shift 2
  [[ " $PARTS " == *" $name "* ]] || return 0
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$OUT/device.txt"
  grep -v -E "USDT|profiler_st" "$OUT/$name.log" | tail -4
}

SPEED="--device cuda --bf16 --gradient_checkpointing --config_dir $MODELS --tasks 2 --repeats 1 --skip budget"
part speed_05b_lora 90 python3 bench/speed.py --config qwen2.5-0.5b $SPEED --out "$OUT/speed_05b_lora.md"
part speed_05b_qlora 70 python3 bench/speed.py --config qwen2.5-0.5b $SPEED --qlora --out "$OUT/speed_05b_qlora.md"
part bfcl_05b 120 python3 train.py --model $MODELS/qwen2.5-0.5b-random-seed0 --bf16 --gradient_checkpointing \
  --env bfcl --steps 2 --tasks_per_step 4 --group_size 4 --max_new_tokens 64 --max_context 32768 --lr 1e-5 \
  --ppo_epochs 1 --minibatches 2 \
  --eval_every 0 --eval_tasks 4 --eval_samples 1 --save_every 0 --out /tmp/bfcl_05b
cp /tmp/bfcl_05b/metrics.jsonl "$OUT/bfcl_05b_metrics.jsonl" 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$OUT/device.txt"
part speed_7b_qlora 180 python3 bench/speed.py --config qwen2.5-7b $SPEED --qlora --tasks 1 --group 4 --turns 1 2 \
  --out "$OUT/speed_7b_qlora.md"
