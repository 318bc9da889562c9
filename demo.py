"""`make demo`: the whole job end to end on real photos, offline, with a pretrained network.

The photos: 5 classes of flowers shipped in data/flowers_demo (Flickr, CC BY 2.0; see its
ATTRIBUTION.md), with a test split of their own. Steps: convert them with convert_dataset.py,
train a head on the frozen EfficientNet-Lite0 (ImageNet weights) over its cached features (the
`demo` config set), evaluate the best snapshot, predict a few photos, export it as a SavedModel
and its feature extractor as a hub module, then fine-tune the network briefly (`demo_finetune`).
Re-running resumes: finished steps are not repeated.
"""

import os
import shlex
import sys

import convert_dataset
import run

PHOTOS_DIR = os.path.join("data", "flowers_demo")
DEMO_DIR = os.path.join("out", "demo")
DATASET_DIR = os.path.join(DEMO_DIR, "dataset")
HUB_MODULE_DIR = os.path.join(DEMO_DIR, "hub_module")
SAVED_MODEL_DIR = os.path.join(DEMO_DIR, "saved_model")
TARGET_ACCURACY = 0.85


def step(title: str) -> None:
    """A visible section header between the demo's steps."""
    print(f"\n=== {title}", flush=True)


def convert(split: str, labels_file: str = None) -> None:
    """Convert one split with convert_dataset.py, as a user would."""
    argv = [
        "--dataset_dir", os.path.join(PHOTOS_DIR, split), "--tfrecord_filename", split,
        "--tfrecord_dir", os.path.join(DATASET_DIR, split), "--max_edge", "224", "--num_shards", "2", "--seed", "0",
    ]
    if labels_file:
        argv += ["--labels_file", labels_file]
    if convert_dataset.main(argv) != 0:
        raise SystemExit(f"error: converting {split} failed")


def run_step(*argv: str) -> None:
    """``python run.py ARGV`` in this process; stop the demo if it fails."""
    print("$ " + shlex.join(["python", "run.py", *argv]), flush=True)
    code = run.main(list(argv))
    if code != 0:
        raise SystemExit(code)


def best_accuracy(best_model_dir: str) -> float:
    """Test accuracy recorded with a best snapshot."""
    from library.best_checkpoint import BestCheckpoint

    return BestCheckpoint(best_model_dir).record["metrics"]["accuracy"]


def main() -> int:
    labels_file = os.path.join(DATASET_DIR, "train", "labels.txt")
    if not os.path.exists(labels_file):
        step(f"Converting the photos of {PHOTOS_DIR} to TFRecords")
        convert("train")
        convert("test", labels_file)
    step("Training a head on the frozen, pretrained EfficientNet-Lite0 (`demo` config set; re-run to resume)")
    run_step("--config_set", "demo")
    step("Evaluating the best snapshot")
    run_step("--config_set", "demo", "--mode", "evaluate", "--model", "best")
    step("Predicting a few test photos")
    run_step("--config_set", "demo", "--mode", "predict", "--model", "best", "--top_k", "2",
             "--predict_input", os.path.join(PHOTOS_DIR, "test", "*", "1[0-4]*.jpg"))
    step(f"Exporting a SavedModel (serving JPEG bytes) to {SAVED_MODEL_DIR}")
    run_step("--config_set", "demo", "--mode", "export", "--model", "best", "--export_dir", SAVED_MODEL_DIR)
    step(f"Exporting the feature extractor as a hub module to {HUB_MODULE_DIR}")
    run_step("--config_set", "demo", "--mode", "export_hub", "--model", "best", "--output", HUB_MODULE_DIR)
    step("Fine-tuning the network briefly, from that hub module (`demo_finetune`)")
    run_step("--config_set", "demo_finetune")
    accuracy = best_accuracy(os.path.join(DEMO_DIR, "best"))
    finetuned = best_accuracy(os.path.join("out", "demo_finetune", "best"))
    print(f"\ndemo test accuracy: {accuracy:.2%} with the head on the frozen network (best snapshot of `demo`), "
          f"{finetuned:.2%} after fine-tuning (`demo_finetune`)")
    if accuracy < TARGET_ACCURACY:
        print(f"error: the demo should reach {TARGET_ACCURACY:.0%} test accuracy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
