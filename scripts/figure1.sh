#!/usr/bin/env bash
# The paper's Figure 1 on CIFAR-10: the four-layer `cifar` net with ReLU against the same net with
# tanh, epochs until the training error first reaches 25%. As in the paper, each network gets its
# own learning rate, the fastest we found (LR_RELU default 0.001: 0.01 learns several times slower;
# LR_TANH default 0.01: at 0.001 tanh's loss has barely moved after 100 steps), no schedule, no
# validation pass. A run checkpoints every epoch and rerunning the script resumes it.
#   usage: [LR_RELU=0.001] [LR_TANH=0.01] scripts/figure1.sh CIFAR10_DIR [OUT_DIR] [MAX_EPOCHS]
# Writes OUT_DIR/relu, OUT_DIR/tanh (runs) and OUT_DIR/figure1.png, and prints the epoch counts.
set -euo pipefail
data=${1:?usage: scripts/figure1.sh CIFAR10_DIR [OUT_DIR] [MAX_EPOCHS]}
out=${2:-runs/figure1}
max=${3:-60}
bin=${ALEXNET:-target/release/alexnet}
common=(--preset cifar --data "$data" --epochs "$max" --lr-schedule constant --until-train-error 0.25
        --no-val --checkpoint-every 390 --no-progress)
# Whether a run's metrics already show an epoch at or under 25% training error.
reached() {
  [[ -f $1/metrics.jsonl ]] && python3 - "$1/metrics.jsonl" <<'PY'
import json, sys
ends = [json.loads(l) for l in open(sys.argv[1]) if '"epoch_end"' in l]
sys.exit(0 if any((e.get("train_top1_error") or 1) <= 0.25 for e in ends) else 1)
PY
}
for act in relu tanh; do
  flag=(--lr "${LR_RELU:-0.001}"); [[ $act == tanh ]] && flag=(--tanh --lr "${LR_TANH:-0.01}")
  if reached "$out/$act"; then
    echo "$act: already at the goal, not trained further"
  elif [[ -f $out/$act/checkpoint.safetensors ]]; then
    "$bin" train "${common[@]}" "${flag[@]}" --resume "$out/$act" || true
  else
    "$bin" train "${common[@]}" "${flag[@]}" --out "$out/$act"
  fi
done
"$bin" plot "$out/relu" "$out/tanh" --out "$out/figure1.png" --goal 0.25
for act in relu tanh; do
  python3 - "$out/$act/metrics.jsonl" "$act" <<'PY'
import json, sys
ends = [json.loads(l) for l in open(sys.argv[1]) if '"epoch_end"' in l]
hit = next((e["epoch_end"] for e in ends if e.get("train_top1_error") is not None and e["train_top1_error"] <= 0.25), None)
last = ends[-1] if ends else {}
print(f"{sys.argv[2]}: " + (f"25% training error after {hit} epochs" if hit else
      f"not reached in {last.get('epoch_end', 0)} epochs (last {100 * last.get('train_top1_error', 1):.1f}%)"))
PY
done
