"""README "Adapt it to your project", followed literally on a copy of the project, so the guide cannot go stale.

The code blocks are taken from the README as they stand: a new data set (a project.yaml set),
a new network with its own hyperparameter (one file), a new record field (two lines of
record_schema.py). Each is then used the way the guide says, through the real scripts.
"""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import ROOT

PROJECT_FILES = ("library", "project", "run.py", "convert_dataset.py", "project.yaml", "hyperparameters.yaml")


def guide_blocks():
    """The code blocks of the README's "Adapt it to your project" section, in order: (language, text)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    section = readme.split("## Adapt it to your project", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", section, re.S)


def guide_block(first_line: str) -> str:
    """The guide's code block that starts with ``first_line``."""
    (text,) = [text for _, text in guide_blocks() if text.startswith(first_line)]
    return text


def changed_files(before: str, after: str) -> list:
    """Files that differ (or are new) between two copies of the project, relative paths, sorted."""
    changed = []
    for folder, _, names in os.walk(after):
        for name in names:
            if name.endswith(".pyc"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, after)
            original = os.path.join(before, relative)
            if not os.path.exists(original) or open(original, "rb").read() != open(path, "rb").read():
                changed.append(relative)
    return sorted(changed)


@pytest.fixture
def copy(tmp_path):
    """A pristine copy of the project and a working copy to follow the guide in: (pristine, working)."""
    for name in ("pristine", "working"):
        for item in PROJECT_FILES:
            source, target = os.path.join(ROOT, item), tmp_path / name / item
            if os.path.isdir(source):
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(source, target)
    return str(tmp_path / "pristine"), str(tmp_path / "working")


def photos(folder):
    """Two classes of noisy coloured 24x16 photos, six each, in train/ and test/."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, color in (("red", (220, 30, 30)), ("blue", (20, 40, 220))):
            os.makedirs(os.path.join(folder, split, name))
            for index in range(6):
                pixels = np.clip(np.array(color) + rng.normal(0, 20, (16, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(os.path.join(folder, split, name, f"{index}.jpg"))


def script(working, *argv):
    """Run one of the copy's scripts there, as a user would; the completed process."""
    return subprocess.run([sys.executable, *argv], cwd=working, capture_output=True, text=True, timeout=600)


def convert(working):
    """Convert the photos the way "Prepare the dataset" says, into my_photos/ as the guide's set expects."""
    for split in ("train", "test"):
        argv = ["convert_dataset.py", "--dataset_dir", f"raw/{split}", "--tfrecord_filename", split,
                "--tfrecord_dir", f"my_photos/{split}", "--max_edge", "24", "--num_workers", "1"]
        if split == "test":
            argv += ["--labels_file", "my_photos/train/labels.txt"]
        result = script(working, *argv)
        assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_new_data_set_and_a_new_network_with_its_own_hyperparameter(copy):
    pristine, working = copy
    with open(os.path.join(working, "project.yaml"), "a", encoding="utf-8") as handle:
        handle.write("\n" + guide_block("my_photos:\n"))
    network = guide_block("# project/networks/tiny_cnn.py\n")
    with open(os.path.join(working, "project", "networks", "tiny_cnn.py"), "w", encoding="utf-8") as handle:
        handle.write(network)
    assert changed_files(pristine, working) == ["project.yaml", "project/networks/tiny_cnn.py"]

    photos(os.path.join(working, "raw"))
    convert(working)
    (command,) = [text for language, text in guide_blocks() if language == "bash" and "tiny_cnn" in text]
    argv = command.split()[1:]  # after "python"
    result = script(working, *argv)
    assert result.returncode == 0, result.stderr
    assert "dry run: one training step and one evaluation batch ran" in result.stdout

    result = script(working, "run.py", "--config_set", "my_photos", "--hub_module", "tiny_cnn", "--fine_tuning",
                    "--tiny_cnn_filters", "8", "--train_epochs", "1", "--train_batch_size", "4", "--image_size", "16")
    assert result.returncode == 0, result.stderr
    assert "feature extractor: tiny_cnn (random weights, trained from scratch); signature image_feature_vector, " \
           "output default: 8 features" in result.stdout
    assert "--tiny_cnn_filters" in script(working, "run.py", "--help").stdout
    result = script(working, "-m", "project.networks", "--network", "tiny_cnn", "--tiny_cnn_filters", "4",
                    "--image_size", "16", "--output", "out/tiny_module")
    assert result.returncode == 0, result.stderr
    spec_file = os.path.join(working, "out", "tiny_module", "tfhub_module.pb")
    assert os.path.exists(spec_file)


@pytest.mark.slow
def test_a_new_record_field_reaches_the_model(copy):
    pristine, working = copy
    schema_path = os.path.join(working, "project", "record_schema.py")
    with open(schema_path, encoding="utf-8") as handle:
        schema = handle.read()
    for dictionary, first_line in (("FIELDS = {\n", "# project/record_schema.py, in FIELDS\n"),
                                   ("READ = {\n", "# project/record_schema.py, in READ\n")):
        entry = guide_block(first_line).split("\n", 1)[1]
        schema = schema.replace(dictionary, dictionary + entry, 1)
    with open(schema_path, "w", encoding="utf-8") as handle:
        handle.write(schema)
    assert changed_files(pristine, working) == ["project/record_schema.py"]

    photos(os.path.join(working, "raw"))
    convert(working)
    reader = (
        "import sys; from library.tensorflow_env import import_tensorflow, use_graph_mode; tf = import_tensorflow(); "
        "use_graph_mode(); from project import input_fn; "
        "params = dict(eval_data='my_photos/test/test-*.tfrecord', cycle_length=2, eval_batch_size=12, image_size=16, "
        "eval_crop_fraction=1.0, num_parallel_calls=0, random_seed=0); "
        "features, _ = tf.compat.v1.data.make_one_shot_iterator(input_fn.input_fn(params, 'eval')).get_next(); "
        "print(sorted(tf.compat.v1.Session().run(features['aspect_ratio']).tolist()))"
    )
    result = script(working, "-c", reader)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([1.5] * 12)  # every photo is 24x16
