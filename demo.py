"""`make demo`: the whole job end to end on scikit-learn's 1,797 handwritten digits, offline.

Steps: write the digits as JPEG class folders (train/test split), convert them with
convert_dataset.py, train the `demo` config set, evaluate the best snapshot, predict a few
test images, export the trained feature extractor as a hub module and fine-tune from it
(`demo_finetune`). Re-running resumes: finished steps are not repeated.
"""

import os
import shlex
import sys

import numpy as np
from PIL import Image

import convert_dataset
import run

DEMO_DIR = os.path.join("out", "demo")
RAW_DIR = os.path.join(DEMO_DIR, "digits")
DATASET_DIR = os.path.join(DEMO_DIR, "dataset")
PREDICT_DIR = os.path.join(DEMO_DIR, "predict")
HUB_MODULE_DIR = os.path.join(DEMO_DIR, "hub_module")
IMAGE_SIZE = 32
TEST_FRACTION = 0.2
TARGET_ACCURACY = 0.95


def step(title: str) -> None:
    """A visible section header between the demo's steps."""
    print(f"\n=== {title}", flush=True)


def write_digits(directory: str, seed: int = 0) -> None:
    """The 8x8 digits upscaled to 32x32 JPEGs in train/<digit>/ and test/<digit>/ folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.images))
    test_count = int(len(order) * TEST_FRACTION)
    for position, index in enumerate(order):
        split = "test" if position < test_count else "train"
        folder = os.path.join(directory, split, str(digits.target[index]))
        os.makedirs(folder, exist_ok=True)
        pixels = (255 - digits.images[index] * (255 / 16)).astype(np.uint8)  # dark ink on white paper
        image = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        image.save(os.path.join(folder, f"digit_{index:04d}.jpg"), quality=95)


def convert(split: str, labels_file: str = None) -> None:
    """Convert one split with convert_dataset.py, as a user would."""
    argv = [
        "--dataset_dir", os.path.join(RAW_DIR, split), "--tfrecord_filename", split,
        "--tfrecord_dir", os.path.join(DATASET_DIR, split), "--max_edge", str(IMAGE_SIZE),
        "--num_shards", "2", "--seed", "0",
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
    if not os.path.isdir(RAW_DIR):
        step(f"Writing scikit-learn's digits as JPEG class folders in {RAW_DIR}")
        write_digits(RAW_DIR)
    labels_file = os.path.join(DATASET_DIR, "train", "labels.txt")
    if not os.path.exists(labels_file):
        step("Converting to TFRecords")
        convert("train")
        convert("test", labels_file)
    step("Training the `demo` config set (re-run to resume; a finished run trains no further)")
    run_step("--config_set", "demo")
    step("Evaluating the best snapshot")
    run_step("--config_set", "demo", "--mode", "evaluate", "--model", "best")
    step("Predicting a few test images")
    run_step("--config_set", "demo", "--mode", "predict", "--model", "best",
             "--predict_input", os.path.join(RAW_DIR, "test", "*", "digit_00[0-3]*.jpg"))
    step(f"Exporting the trained feature extractor as a hub module to {HUB_MODULE_DIR}")
    run_step("--config_set", "demo", "--mode", "export_hub", "--model", "best", "--output", HUB_MODULE_DIR)
    step("Fine-tuning from that hub module (`demo_finetune`)")
    run_step("--config_set", "demo_finetune")
    accuracy = best_accuracy(os.path.join(DEMO_DIR, "best"))
    finetuned = best_accuracy(os.path.join("out", "demo_finetune", "best"))
    print(f"\ndemo test accuracy: {accuracy:.2%} (best snapshot of `demo`), "
          f"{finetuned:.2%} after fine-tuning from the exported hub module")
    if accuracy < TARGET_ACCURACY:
        print(f"error: the demo should reach {TARGET_ACCURACY:.0%} test accuracy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
