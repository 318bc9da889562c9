"""What the tests share: TensorFlow in TF1 graph mode as in the product, the tiny data set's helpers, image makers.

Fixtures built from these (the tiny data set, one trained run, a small frozen module) are in ``conftest.py``.
"""

import atexit
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import skimage
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Pretrained networks' modules are built into TF Hub's module cache: once per test session (and its subprocesses),
# in a folder of its own, never into the user's cache.
os.environ["TFHUB_CACHE_DIR"] = tempfile.mkdtemp(prefix="tfhub-cache-")
atexit.register(shutil.rmtree, os.environ["TFHUB_CACHE_DIR"], True)

from library.tensorflow_env import import_tensorflow, use_graph_mode  # noqa: E402

tf = import_tensorflow()
use_graph_mode()  # as the product's entry points run

import run  # noqa: E402 (after graph mode)
from library.evaluation.evaluator import EVALUATIONS_FILE  # noqa: E402

# --- the tiny data set: noisy solid colors, 8 images per class, trained in 3 steps an epoch ---

COLORS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


IMAGES_PER_CLASS = 8


BATCH = 8


STEPS_PER_EPOCH = len(COLORS) * IMAGES_PER_CLASS // BATCH


IMAGE_SIZE = 16  # of the tiny set


def write_images(folder, seed):
    """Noisy solid-color 20x20 JPEGs, one class folder per color."""
    rng = np.random.default_rng(seed)
    for name, color in COLORS.items():
        os.makedirs(folder / name)
        for index in range(IMAGES_PER_CLASS):
            pixels = np.clip(np.array(color) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / name / f"{index}.jpg", quality=95)


def run_main(project_file, out, *argv):
    """run.main in this process with the tiny set, its directories under ``out``."""
    return run.main(["--project_file", str(project_file), "--config_set", "tiny",
                     "--model_dir", str(out / "model"), "--best_model_dir", str(out / "best"), *argv])


def evaluations(out):
    with open(out / "model" / EVALUATIONS_FILE) as handle:
        return [json.loads(line) for line in handle]


def serve(saved_model_dir, jpegs):
    """The serving signature's outputs for encoded images, as TensorFlow Serving would compute them."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.load(session, ["serve"], saved_model_dir)
        signature = meta_graph.signature_def["serving_default"]
        return session.run(
            {key: value.name for key, value in signature.outputs.items()},
            {signature.inputs["image_bytes"].name: jpegs},
        )


def hold_lock_in_another_process(model_dir):
    """A process that holds model_dir's training lock until killed; returned once it holds it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom library import model_directory\n"
         "with model_directory.training_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(600)\n",
         str(model_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


# --- configuration files ---


def write_files(directory, project, hyperparameters):
    """Write a project.yaml / hyperparameters.yaml pair; returns the project file path."""
    (directory / "hyperparameters.yaml").write_text(textwrap.dedent(hyperparameters))
    path = directory / "project.yaml"
    path.write_text(textwrap.dedent(project))
    return str(path)


# --- images ---

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
PHOTOS = os.path.join(os.path.dirname(skimage.__file__), "data")


def encoded(image: Image.Image, format: str, **options) -> bytes:
    """``image`` saved in ``format``, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def halves(size, left, right, mode="RGB") -> Image.Image:
    """Left half ``left``, right half ``right``: each color survives JPEG away from the middle."""
    width, height = size
    image = Image.new(mode, size, left)
    image.paste(right, (width // 2, 0, width, height))
    return image


def noise(size, seed=0) -> Image.Image:
    """A photo-like incompressible RGB image."""
    width, height = size
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def photo(name) -> Image.Image:
    """One of scikit-image's sample photos, in RGB."""
    with Image.open(os.path.join(PHOTOS, name)) as image:
        return image.convert("RGB")
