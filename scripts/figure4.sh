#!/usr/bin/env bash
# The paper's Figure 4, drawn by the engine from the shared ImageNet samples with a small network:
# the four-layer `cifar` net trained on CIFAR-10 (8 epochs, a few minutes on a CPU), so its ten
# classes are CIFAR's. Left: eight samples whose ImageNet class is one of CIFAR's (birds, dogs, a
# frog, ships), each with its top-5 classes as bars, the true class in red (a labels file made
# here maps each sample to its CIFAR class). Right: five samples as queries, each beside the six
# other samples whose last hidden layer (pool3) is nearest.
#   usage: scripts/figure4.sh CIFAR10_DIR IMAGENET_SAMPLES [OUT_DIR]
# Writes OUT_DIR/run (resumed if there), OUT_DIR/labels.txt, OUT_DIR/gallery.npy (+ .rows.tsv),
# OUT_DIR/figure4-left.png and OUT_DIR/figure4-right.png.
set -euo pipefail
cifar=${1:?usage: scripts/figure4.sh CIFAR10_DIR IMAGENET_SAMPLES [OUT_DIR]}
samples=${2:?usage: scripts/figure4.sh CIFAR10_DIR IMAGENET_SAMPLES [OUT_DIR]}
out=${3:-runs/figure4}
bin=${ALEXNET:-target/release/alexnet}
mkdir -p "$out"
if [[ ! -f $out/run/checkpoint.safetensors ]]; then
  "$bin" train --data "$cifar" --preset cifar --epochs 8 --out "$out/run" --no-progress
fi
# ImageNet classes that are CIFAR-10 classes, by WordNet id.
declare -A cifar_class=(
  [n01641577]=frog      # bullfrog
  [n02007558]=bird      # flamingo
  [n01860187]=bird      # black swan
  [n01820546]=bird      # lorikeet
  [n02110185]=dog       # Siberian husky
  [n02088094]=dog       # Afghan hound
  [n03095699]=ship      # container ship
  [n04147183]=ship      # schooner
)
: > "$out/labels.txt"
left=()
for wnid in "${!cifar_class[@]}"; do
  for f in "$samples/$wnid"/*; do
    echo "$(basename "$f") ${cifar_class[$wnid]}" >> "$out/labels.txt"
    left+=("$f")
  done
done
mapfile -t left < <(printf '%s\n' "${left[@]}" | sort)
"$bin" predict --checkpoint "$out/run" --device cpu --labels "$out/labels.txt" \
  --figure "$out/figure4-left.png" "${left[@]}" > /dev/null
# Five queries; the gallery is every other sample.
queries=("$samples"/n02110185/* "$samples"/n04147183/* "$samples"/n02007558/* \
         "$samples"/n01641577/* "$samples"/n03095699/*)
gallery=()
for f in "$samples"/*/*; do
  [[ " ${queries[*]} " == *" $f "* ]] || gallery+=("$f")
done
rm -f "$out/gallery.npy" "$out/gallery.rows.tsv"
"$bin" features --checkpoint "$out/run" --device cpu --layer pool3 --no-progress \
  --out "$out/gallery.npy" "${gallery[@]}"
"$bin" similar --checkpoint "$out/run" --device cpu --gallery "$out/gallery.npy" --top 6 \
  --no-progress --figure "$out/figure4-right.png" "${queries[@]}"
