"""The project's configuration as run.py resolves it (project.yaml's `default` set), pointed at the benchmark records.

The feature extractor of rows 2-6 is the small CNN at 224x224 (96x96 in --quick) written as a
hub module beside the records: a network of the same cost in every run, whatever the
`default` set's pretrained network is (rows 8 and 9 time that one).
"""

import os

from library import config, hub_module
from project.experiment import ImageClassifier
from project.networks import NETWORKS
from project.options import OPTIONS

experiment = ImageClassifier()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_SET = "default"
PRETRAINED = "efficientnet_lite0"  # the pretrained network the `default` set trains a head on
IMAGE_SIZE = {"full": 224, "quick": 96}


def feature_extractor_module(context) -> str:
    """small_cnn as a hub module beside the records, written once.

    Speed does not depend on the weights' values, so its random-weights marker is removed: the
    head-only configuration (fine_tuning False), refused for random weights, can then be timed.
    """
    size = IMAGE_SIZE[context.size]
    module_dir = os.path.join(os.path.dirname(os.path.abspath(context.records_dir)), f"small_cnn_{size}px_module")
    if not os.path.exists(os.path.join(module_dir, hub_module.MODULE_DEF_FILE)):
        spec = hub_module.create_spec(NETWORKS["small_cnn"], size, {}, seed=0)
        hub_module.export_spec(spec, module_dir)
        os.remove(os.path.join(module_dir, hub_module.RANDOM_WEIGHTS_FILE))
    return module_dir


def pretrained_network(context) -> str:
    """What rows 8 and 9 time: the pretrained network; in --quick the small CNN module, which checks the rows work
    without EfficientNet-Lite0's ~30 ms an image on 2 cores and its module built from the weights first."""
    return feature_extractor_module(context) if context.quick else PRETRAINED


def run_argv(context, *extra: str) -> list:
    """run.py arguments selecting the `default` set, with the benchmark records as training and evaluation data.

    The frozen module sees the images every step (no feature cache: ``extra`` may ask for it), and
    every file a run writes goes beside the records, never into the set's own out/ folders.
    """
    records = context.records_dir
    pattern = os.path.join(records, "train-*.tfrecord")
    scratch = os.path.dirname(os.path.abspath(records))
    return [
        "--project_file", os.path.join(ROOT, "project.yaml"), "--config_set", CONFIG_SET,
        "--train_data", pattern, "--eval_data", pattern, "--labels_file", os.path.join(records, "labels.txt"),
        "--hub_module", feature_extractor_module(context), "--no-cache_features",
        "--model_dir", os.path.join(scratch, "model"), "--best_model_dir", os.path.join(scratch, "best"), *extra,
    ]


def settings_and_params(context, *extra: str) -> tuple:
    """(settings, params) that run.py would build from :func:`run_argv`."""
    return parsed(run_argv(context, *extra))


def parsed(argv: list) -> tuple:
    """(settings, params) that run.py builds from ``argv``."""
    settings, _ = config.parse(OPTIONS, argv, prog="run.py")
    return settings, experiment.make_params(settings.as_dict())
