#!/bin/bash
# Test accuracy of head-only training with and without the feature cache, on real photos (issue 15).
# Not part of `make bench` (it needs ../shared/data/flowers_small converted into out/flowers/ as the
# README's batch-norm section says, and ~15 minutes on 2 cores). Run from the project root:
#   benchmarks/feature_cache_study.sh            # seeds 0-9; SEEDS="0 1" for fewer
# A frozen module of our own: small_cnn trained 15 epochs from scratch on the same photos (the `flowers`
# set, 96 px) and exported with --mode export_hub. Then, per seed, 10 epochs of head-only training on it
# (the `default` hyperparameters: lr 1e-3, dropout 0.2, batch 32): without the cache, with cache_features
# (centre crops) and with cached_views 4. Each run's last evaluation line goes to out/cachestudy/results.txt.
set -eu
PY=${PYTHON:-.venv/bin/python}
S=out/cachestudy
mkdir -p $S/runs
if [ ! -f $S/module/tfhub_module.pb ]; then
  $PY run.py --config_set flowers --train_epochs 15 --epochs_between_evals 15 \
    --model_dir $S/src/model --best_model_dir $S/src/best > $S/src.log 2>&1
  $PY run.py --config_set flowers --mode export_hub --model best \
    --model_dir $S/src/model --best_model_dir $S/src/best --output $S/module >> $S/src.log 2>&1
  echo "module: $(grep '^done' $S/src.log)" | tee -a $S/results.txt
fi
for seed in ${SEEDS:-0 1 2 3 4 5 6 7 8 9}; do
  for variant in uncached cached views4; do
    extra=()
    [ $variant = cached ] && extra=(--cache_features)
    [ $variant = views4 ] && extra=(--cache_features --cached_views 4)
    run=$S/runs/$variant-$seed
    $PY run.py --config_set flowers --hyperparameter_set default --hub_module $S/module --no-fine_tuning \
      --train_epochs 10 --epochs_between_evals 10 --random_seed $seed \
      --model_dir $run/model --best_model_dir $run/best "${extra[@]}" > $run.log 2>&1
    echo "$variant seed $seed: $(grep '^epoch 10/10' $run.log)" | tee -a $S/results.txt
  done
done
