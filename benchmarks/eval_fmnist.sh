#!/usr/bin/env bash
# SimCLR, MAE and MACRL pretrained on the same CPU budget (tiny ViT, depth 6, 28 px, 10,000 Fashion-MNIST
# training images, 5 epochs, 1 worker), then `sslray report` on the three runs: kNN (k=5) and linear
# probe on the full train (60,000) / test (10,000) splits, next to a random-init ViT and raw pixels.
#   bash benchmarks/eval_fmnist.sh [OUT]        (OUT default runs/eval-fmnist; ~30 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/eval-fmnist}
BUDGET=(data.limit=10000 train.epochs=5 train.warmup_epochs=1 train.keep_checkpoints=5
        data.knn_bank=data/fmnist/train data.knn_query=data/fmnist/test data.knn_bank_limit=5000
        data.knn_query_limit=1000)
for method in simclr mae macrl; do
  recipe=search_spaces/${method}_fmnist.yaml
  [ "$method" = simclr ] && recipe=search_spaces/simclr_fmnist_vit.yaml
  if [ ! -d "$OUT/$method" ]; then
    /usr/bin/time -f "$method pretraining: %e s wall" .venv/bin/sslray train "$recipe" --out "$OUT/$method" "${BUDGET[@]}"
  fi
done
/usr/bin/time -f "report: %e s wall" .venv/bin/sslray report "$OUT" --data data/fmnist --k 5 --temperature 0.07 --epochs 40 \
  --tsne-epochs 1,5 --val-limit 10000 --overwrite
