#!/bin/bash
# The converter's split on real photos (issue 25): flowers_small's train and test folders merged into one tree,
# split with --validation_percentage 20 twice (the same shards?) and again with 10 other photos added (did any
# file change sets?), then the `default` sets (EfficientNet-Lite0 frozen, cache_features, 1000 epochs) trained on
# that split and on the two-folder flow (the README's 800 / 200), per seed. Not part of `make bench`: about 3
# minutes a training run on 2 cores. Run from the project root:
#   benchmarks/split_study.sh                   # seeds 0-2; SEEDS="0" for fewer
# Results in out/splitstudy/results.txt.
set -eu
PY=${PYTHON:-.venv/bin/python}
FLOWERS=${FLOWERS:-../shared/data/flowers_small}
S=out/splitstudy
mkdir -p $S/runs
convert() { $PY convert_dataset.py --max_edge 192 "$@" 2> /dev/null | tail -1; }
if [ ! -d $S/all ]; then  # one folder: each class's train and test photos together
  for split in train test; do
    for class in "$FLOWERS"/$split/*; do mkdir -p $S/all/$(basename "$class"); cp "$class"/* $S/all/$(basename "$class")/; done
  done
  cp -r $S/all $S/more
  $PY - $S/more <<'PYTHON'
import sys
from tests.library.test_image_digest import photo  # scikit-image's photos: 10 images none of the classes has
names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
         "retina.jpg", "hubble_deep_field.jpg", "horse.png", "ihc.png"]
classes = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
for index, name in enumerate(names):
    photo(name).save(f"{sys.argv[1]}/{classes[index % 5]}/other_{name.split('.')[0]}.jpg", quality=90)
PYTHON
fi
for run in split split_again more; do
  source=$S/all; [ $run = more ] && source=$S/more
  convert --dataset_dir $source --tfrecord_dir $S/$run --validation_percentage 20 > $S/$run.txt
done
convert --dataset_dir "$FLOWERS"/train --tfrecord_filename train --tfrecord_dir $S/two/train
convert --dataset_dir "$FLOWERS"/test --tfrecord_filename test --tfrecord_dir $S/two/test --labels_file $S/two/train/labels.txt
$PY - $S <<'PYTHON' | tee $S/results.txt
import filecmp, glob, json, os, sys
folder = sys.argv[1]
def sets(run):  # file -> set, from the manifests
    return {file: name for name in ("train", "validation")
            for file in json.load(open(f"{folder}/{run}/{name}-manifest.json"))["image_digests"]}
def shards(run):
    return sorted(os.path.basename(path) for path in glob.glob(f"{folder}/{run}/*.tfrecord"))
first, again, more = sets("split"), sets("split_again"), sets("more")
same = shards("split") == shards("split_again") and all(
    filecmp.cmp(f"{folder}/split/{name}", f"{folder}/split_again/{name}", shallow=False) for name in shards("split"))
print(f"split twice: {len(first)} files, same sets {first == again}, byte-identical shards {same}")
print(f"10 photos added: {len(more) - len(first)} new files, {sum(more[file] != first[file] for file in first)} moved;"
      f" new ones in {sorted(more[file] for file in more if file not in first)}")
for name in ("train", "validation"):
    print(name, json.load(open(f"{folder}/split/{name}-manifest.json"))["images_per_class"])
PYTHON
for seed in ${SEEDS:-0 1 2}; do
  for flow in split two; do
    if [ $flow = split ]; then data=(--train_data "$S/split/train-*.tfrecord" --eval_data "$S/split/validation-*.tfrecord"
                                     --labels_file $S/split/labels.txt)
    else data=(--train_data "$S/two/train/train-*.tfrecord" --eval_data "$S/two/test/test-*.tfrecord"
               --labels_file $S/two/train/labels.txt); fi
    run=$S/runs/$flow-$seed
    $PY run.py "${data[@]}" --random_seed $seed --model_dir $run/model --best_model_dir $run/best > $run.log 2>&1
    echo "$flow seed $seed: $(grep '^done' $run.log)" | tee -a $S/results.txt
  done
done
