"""The project's configuration exactly as run.py resolves it (project.yaml's `default` set), pointed at the benchmark records."""

import os

from library import config
from project import experiment
from project.options import OPTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_SET = "default"


def run_argv(records_dir: str, *extra: str) -> list:
    """run.py arguments selecting the `default` set, with the benchmark records as training and evaluation data."""
    pattern = os.path.join(records_dir, "train-*.tfrecord")
    return [
        "--project_file", os.path.join(ROOT, "project.yaml"), "--config_set", CONFIG_SET,
        "--train_data", pattern, "--eval_data", pattern, "--labels_file", os.path.join(records_dir, "labels.txt"),
        *extra,
    ]


def settings_and_params(records_dir: str, *extra: str) -> tuple:
    """(settings, params) that run.py would build from :func:`run_argv`."""
    settings, _ = config.parse(OPTIONS, run_argv(records_dir, *extra), prog="run.py")
    return settings, experiment.make_params(settings.as_dict())
