"""Where a from-scratch network's train/eval accuracy gap comes from: the batch-norm statistics, measured per checkpoint.

    python -m benchmarks.batch_norm_study --project_file P --config_set S [run.py options] CHECKPOINT...

For each checkpoint, accuracy on the test images (eval_data) and on the training images
preprocessed like evaluation (train_data, central crop), each computed four ways:

* ``moving``: evaluation as the run loop does it, with the checkpoint's moving averages;
* ``batch``: the training graph's batch statistics (batches of train_batch_size);
* ``recalibrated``: moving statistics replaced by population statistics of N batches of
  training images preprocessed like evaluation (library.evaluation.recalibration);
* ``recal_train_crops``: the same population statistics, but of training crops and flips
  (so what is left of the gap is the crop, not the momentum).

Give it the checkpoints of a run made with ``--batch_norm_recalibration_batches 0``: with
recalibration on, each training cycle starts from the recalibrated checkpoint, and Estimator's
first save of the cycle rewrites ``model.ckpt-<step>`` with those statistics. It writes
``recalibrated.ckpt-<step>`` beside each checkpoint (replacing the run's own).
"""

import sys

from library.configuration import config
from library.evaluation import recalibration
from library.tensorflow_env import import_tensorflow, use_graph_mode
from project import input_fn as inputs, model_fn as model, preprocessing
from project.experiment import ImageClassifier
from project.options import OPTIONS

tf = import_tensorflow()
experiment = ImageClassifier()
v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys


def accuracy(checkpoint, params, data, batch_statistics):
    """Accuracy of ``checkpoint`` on every image of ``data`` (evaluation preprocessing)."""
    with tf.Graph().as_default():
        dataset = inputs.input_fn({**params, "eval_data": data, "eval_batch_size": params["train_batch_size"]},
                                  ModeKeys.EVAL)
        features, labels = v1.data.make_one_shot_iterator(dataset).get_next()
        images = preprocessing.to_module_range(features["image"])
        logits = model.classification_head(model.extract_features(images, batch_statistics, params), False, params)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, 1, output_type=labels.dtype), labels), tf.int64))
        with v1.Session() as session:
            v1.train.Saver().restore(session, checkpoint)
            right = total = 0
            try:
                while True:
                    count, batch = session.run([correct, tf.size(labels)])
                    right, total = right + count, total + batch
            except tf.errors.OutOfRangeError:
                pass
    return right / total


def recalibrated(checkpoint, params, batches, train_crops):
    """A recalibrated copy of ``checkpoint`` (not made the latest), on eval or training preprocessing."""
    source = ((lambda: inputs.input_fn(params, ModeKeys.TRAIN)) if train_crops
              else (lambda: experiment.recalibration_input_fn(params)))
    result = recalibration.recalibrate(checkpoint, experiment.model_fn, source, params, batches,
                                                  make_latest=False)
    return result.checkpoint


def measured(checkpoint, params, batches) -> dict:
    """{column: {data pattern: accuracy}} of one checkpoint, the four columns of the table."""
    datasets = (params["eval_data"], params["train_data"])
    columns = {name: {data: accuracy(checkpoint, params, data, batch) for data in datasets}
               for name, batch in (("moving", False), ("batch", True))}
    for name, train_crops in (("recalibrated", False), ("recal_train_crops", True)):
        path = recalibrated(checkpoint, params, batches, train_crops)  # replaced by the next one: measured at once
        columns[name] = {data: accuracy(path, params, data, False) for data in datasets}
    return columns


def main(argv):
    use_graph_mode()
    checkpoints = [arg for arg in argv if ".ckpt-" in arg]
    settings, _ = config.parse(OPTIONS, [arg for arg in argv if arg not in checkpoints], prog="batch_norm_study")
    params = {**experiment.make_params(settings.as_dict()), "steps_per_epoch": 1, "train_steps": 1}
    print("step  data    moving   batch  recalibrated  recal_train_crops")
    for checkpoint in checkpoints:
        columns = measured(checkpoint, params, settings.batch_norm_recalibration_batches)
        for name, data in (("test", params["eval_data"]), ("train", params["train_data"])):
            row = "  ".join(f"{column[data]:6.1%}" for column in columns.values())
            print(f"{checkpoint.rsplit('-', 1)[1]:>5}  {name:5}  {row}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
