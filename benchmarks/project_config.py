"""The project's configuration exactly as run.py resolves it (project.yaml's `default` set), pointed at the benchmark records.

The feature extractor is the small CNN at 224x224 written as a hub module beside the records
(the `default` set's pretrained MobileNetV2 needs a download, and the suite runs offline).
"""

import os

from library import config, hub_module
from project.experiment import ImageClassifier
from project.networks import NETWORKS
from project.options import OPTIONS

experiment = ImageClassifier()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_SET = "default"
IMAGE_SIZE = 224


def feature_extractor_module(records_dir: str) -> str:
    """small_cnn as a hub module beside the records, written once.

    Speed does not depend on the weights' values, so its random-weights marker is removed: the
    head-only configuration (fine_tuning False), refused for random weights, can then be timed.
    """
    module_dir = os.path.join(os.path.dirname(os.path.abspath(records_dir)), "small_cnn_module")
    if not os.path.exists(os.path.join(module_dir, hub_module.MODULE_DEF_FILE)):
        spec = hub_module.create_spec(NETWORKS["small_cnn"], IMAGE_SIZE, {}, seed=0)
        hub_module.export_spec(spec, module_dir)
        os.remove(os.path.join(module_dir, hub_module.RANDOM_WEIGHTS_FILE))
    return module_dir


def run_argv(records_dir: str, *extra: str) -> list:
    """run.py arguments selecting the `default` set, with the benchmark records as training and evaluation data."""
    pattern = os.path.join(records_dir, "train-*.tfrecord")
    return [
        "--project_file", os.path.join(ROOT, "project.yaml"), "--config_set", CONFIG_SET,
        "--train_data", pattern, "--eval_data", pattern, "--labels_file", os.path.join(records_dir, "labels.txt"),
        "--hub_module", feature_extractor_module(records_dir), *extra,
    ]


def settings_and_params(records_dir: str, *extra: str) -> tuple:
    """(settings, params) that run.py would build from :func:`run_argv`."""
    return parsed(run_argv(records_dir, *extra))


def parsed(argv: list) -> tuple:
    """(settings, params) that run.py builds from ``argv``."""
    settings, _ = config.parse(OPTIONS, argv, prog="run.py")
    return settings, experiment.make_params(settings.as_dict())
