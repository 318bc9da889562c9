"""This project as the run loop sees it: the ``library.experiment.Experiment`` of an image classifier.

The glue between option values and the project's input, model and data files: class names
from labels.txt, the input size from the feature extractor, the epoch size from the
converter's manifest. A new project edits its modules, rarely this one.
"""

import glob
import os
import sys

from library.configuration.config import ConfigError
from library.data import manifest as manifests
from library.data.tfrecord_writer import parse_shard_filename
from library.experiment import Experiment
from library.tensorflow_env import import_tensorflow
from project import (cached_features, feature_extractor, fine_tuning, input_benchmark, input_fn as inputs, model_fn as model,
                     raw_images, record_schema, tflite_model)
from project.options import HYPERPARAMETER_OPTIONS, PROJECT_OPTIONS

tf = import_tensorflow()


class ImageClassifier(Experiment):
    """Images of class-per-folder TFRecords (convert_dataset.py) into the classes of labels.txt, with a hub module."""

    options = PROJECT_OPTIONS + HYPERPARAMETER_OPTIONS
    # hub.Module creates its variables by importing the module's graph (import_meta_graph),
    # outside the scope of any tf.distribute strategy, which therefore cannot mirror them:
    # MirroredStrategy fails with "colocate_vars_with must only be passed a variable created in
    # this tf.distribute.Strategy.scope()". Estimator's parameter-server replication needs no
    # strategy and works with hub modules; so does mirrored's tower replication (library/distribution/towers.py),
    # through the two seams in model_fn.py (towers.create_once, towers.optimizer).
    supports_distribution_strategies = False

    def model_fn(self, features, labels, mode, params):
        return model.model_fn(features, labels, mode, params)

    def input_fn(self, params, mode, input_context=None):
        if cached_features.applies(params):
            return cached_features.input_fn(params, mode, input_context)
        return inputs.input_fn(params, mode, input_context)

    def recalibration_input_fn(self, params):
        return inputs.recalibration_input_fn(params)

    def serving_input_receiver_fn(self, params):
        return inputs.serving_input_receiver_fn(params)

    def benchmark_input(self, params, batches: int) -> dict:
        return input_benchmark.benchmark_input(params, batches)

    def export_feature_extractor(self, params, checkpoint_path: str, output_dir: str) -> None:
        model.export_feature_extractor(params, checkpoint_path, output_dir)

    def export_tflite(self, params, checkpoint_path: str, output_path: str) -> None:
        tflite_model.export(params, checkpoint_path, output_path)

    def make_params(self, values: dict) -> dict:
        """Option values plus class_names, num_classes and the image size the feature extractor takes.

        Refuses a feature extractor that cannot work (e.g. a head on random features).
        """
        labels_file = values["labels_file"]
        if not labels_file or not tf.io.gfile.exists(labels_file):
            raise ConfigError(f"labels_file: {labels_file} not found; convert the data set first (convert_dataset.py writes it)")
        try:
            class_names = record_schema.read_labels(labels_file)
        except ValueError as error:
            raise ConfigError(f"labels_file: {error}; fix it or convert the data set again") from None
        if not class_names:
            raise ConfigError(f"labels_file: {labels_file} lists no class; convert the data set again")
        top_k = values["top_k"]
        if not 0 <= top_k <= len(class_names):
            raise ConfigError(f"top_k: {top_k} is not between 0 and the {len(class_names)} classes of {labels_file}")
        params = {**values, "class_names": class_names, "num_classes": len(class_names)}
        try:
            for warning in feature_extractor.check(params):
                print(warning, file=sys.stderr, flush=True)
            params["image_size"] = feature_extractor.input_image_size(params)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        for option in ("train_data", "eval_data"):
            check_one_conversion(params[option], option)
        return params

    def updates_batch_norm(self, params) -> bool:
        """Only a module fine-tuned on batch statistics updates its moving averages (the head has no batch norm)."""
        return feature_extractor.trains_batch_norm(params)

    def training_phases(self, values: dict) -> tuple:
        """With fine_tuning and head_epochs: the head first on cached features, then the whole network
        (project/fine_tuning.py)."""
        return fine_tuning.phases(values)

    def describe(self, params) -> str:
        """The line printed when training starts: which feature extractor, signature, output and sizes."""
        return feature_extractor.describe(params) + ("; its features cached" if cached_features.applies(params) else "")

    def model_identity(self, params) -> dict:
        """What a checkpoint of this model is only good for: its classes, feature extractor and input size."""
        hub_module = params["hub_module"]
        if os.path.isdir(hub_module):  # a local module, however the path is written
            hub_module = os.path.abspath(hub_module)
        return {"class_names": params["class_names"], "hub_module": hub_module, "image_size": params["image_size"]}

    def checkpoint_shapes(self, params) -> dict:
        """The head's kernel: one row per feature of the module, one column per class."""
        features = feature_extractor.resolve(params).use.feature_size
        return {model.LOGITS_KERNEL: ((features, params["num_classes"]), "features x classes")}

    def train_examples(self, params) -> int:
        """Images in one epoch: from the converter's manifests of the train_data shards, else by counting records."""
        pattern = params["train_data"]
        files = sorted(tf.io.gfile.glob(pattern or ""))
        if not files:
            raise ConfigError(f"train_data: no file matches {pattern}; convert the data set first or fix the pattern")
        total = manifests.images_in(pattern, files)
        if total is not None:
            return total
        print(f"warning: no manifest covers every file of {pattern}; counting records (reads all of them once)", flush=True)
        return sum(sum(1 for _ in tf.compat.v1.io.tf_record_iterator(path)) for path in files)

    def predict_input_fn(self, params, source: str):
        """Input over raw image files for prediction: a folder, a glob pattern, or comma-separated files.

        The files are listed now, so that a source without any is an error before the model is loaded.
        """
        if "," in source or not (raw_images.is_folder(source) or glob.has_magic(source)):
            source = raw_images.utf8_paths([path for path in source.split(",") if path])
            missing = [path for path in source if not tf.io.gfile.exists(path)]
            if missing:
                raise ConfigError(f"predict_input: {missing[0]} not found; give a folder, a file pattern, or existing files")
        paths, _ = raw_images.list_image_files(source)
        if not paths:
            found = "no file matches" if isinstance(source, str) and glob.has_magic(source) else "no files in"
            raise ConfigError(f"predict_input: {found} {source}; give a folder, a file pattern, or files holding images")
        return lambda: inputs.raw_input_fn(params, tf.estimator.ModeKeys.PREDICT, paths)

    def damaged_record(self, params):
        """Where the first damaged record of train_data and eval_data is (file and record number, what is wrong),
        found by reading them all; None when every record is whole. Called after a DataLossError, which names no file."""
        for pattern in (params["train_data"], params["eval_data"]):
            for path in sorted(tf.io.gfile.glob(pattern)) if pattern else []:
                index = 0
                try:
                    for _ in tf.compat.v1.io.tf_record_iterator(path):
                        index += 1
                except tf.errors.DataLossError as error:
                    return f"{path}, record {index}: {error.message}"
        return None

    def prediction_row(self, prediction: dict, params) -> dict:
        """One predicted image as named columns: file, class, probability, then class_i, probability_i of the top k."""
        probability = prediction["probabilities"][prediction["class_id"]]
        row = {"file": prediction["filename"].decode(), "class": prediction["class_name"].decode(),
               "probability": f"{probability:.4f}"}
        top = zip(prediction.get("top_k_class_names", ()), prediction.get("top_k_probabilities", ()))
        for rank, (name, top_probability) in enumerate(top, start=1):
            row.update({f"class_{rank}": name.decode(), f"probability_{rank}": f"{top_probability:.4f}"})
        return row


def check_one_conversion(pattern, option) -> None:
    """Raise ConfigError when ``pattern`` matches the shards of two conversions of one set, e.g. ``-of-00004``
    and ``-of-00008`` side by side after an interrupted conversion: reading both would count images twice."""
    counts = {}
    for path in tf.io.gfile.glob(pattern) if pattern else []:
        shard = parse_shard_filename(os.path.basename(path))
        if shard:
            counts.setdefault((os.path.dirname(path), shard[0]), set()).add(shard[2])
    for (directory, name), found in counts.items():
        if len(found) > 1:
            sets = " and ".join(f"{name}-*-of-{count:05d}" for count in sorted(found))
            raise ConfigError(f"{option}: {pattern} matches the shards of {len(found)} conversions in {directory}, "
                              f"{sets}; convert the data set again (it removes the older set) or delete one set")
