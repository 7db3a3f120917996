#!/usr/bin/env bash
# LoRA training speed and memory: owl against PyTorch + peft on the CPU, side by side, on
# the same model (SmolLM2-135M dequantized to float32 safetensors), batch, sequence length
# and rank (LoRA on q,k,v,o,gate,up,down; random token batches; AdamW). owl also runs on the
# demo model's own Q4_1 GGUF (its frozen base stays quantized). A benchmark, not a test.
#
#   bench/train/run.sh [BATCH SEQ RANK STEPS THREADS]      (default 4 64 8 5 2)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
batch="${1:-4}" seq="${2:-64}" rank="${3:-8}" steps="${4:-5}" threads="${5:-2}"
work="${OWL_BENCH_TRAIN_WORK:-$HOME/.cache/owl/bench-train}"
mkdir -p "$work"
hf="$work/smollm2-f32"
if [ ! -f "$hf/model.safetensors" ]; then
  gguf_py="$(bash "$root/scripts/gguf_check/setup.sh")"
  model="$(cd "$root" && cargo run -q --release -p owl-cli -- show smollm2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["store"]["path"])')"
  "$gguf_py" "$root/scripts/gguf_check/export_hf.py" "$model" "$hf" >/dev/null
fi
torch_py="$(bash "$root/scripts/peft_check/setup.sh")"
echo "batch $batch × seq $seq, rank $rank, $steps steps (the first not timed), $threads threads" >&2
"$torch_py" "$root/bench/train/torch_side.py" "$hf" "$batch" "$seq" "$rank" "$steps" "$threads"
owl_side() {
  local model=()
  [ -n "$1" ] && model=(OWL_BENCH_MODEL="$1")
  (cd "$root" && env "${model[@]}" OWL_BENCH_BATCH="$batch" OWL_BENCH_SEQ="$seq" OWL_BENCH_RANK="$rank" \
    OWL_BENCH_STEPS="$steps" OWL_BENCH_THREADS="$threads" \
    cargo test -q --release -p owl-train --test it training_step_speed -- --ignored --nocapture 2>/dev/null \
    | grep '"side"' | sed "s/\"owl\"/\"owl ($2)\"/")
}
owl_side "$hf" "f32 safetensors"
owl_side "" "Q4_1 GGUF"
