"""Size and test accuracy of a trained set's TensorFlow Lite models, float and dynamic-range quantized (issue 25).

    python -m benchmarks.tflite_study --config_set flowers --model best --output out/flowers/tflite [run.py options]

Not part of ``make bench`` (it needs a trained set). Writes ``float32.tflite`` and
``dynamic.tflite`` (``--tflite_quantize dynamic``) into the ``--output`` folder with run.py's
export_tflite mode, then runs each in ``tf.lite.Interpreter``, one image at a time as an
app does, on every image of ``eval_data`` as the evaluation preprocesses it (central crop,
resize), beside the checkpoint itself (model_fn in PREDICT mode on the same images). One line
per model: file size, accuracy, top-1 agreement with the checkpoint, largest difference of a
probability.
"""

import os
import sys

import numpy as np

import run
from library.configuration import config
from library.tensorflow_env import import_tensorflow, use_graph_mode
from library.training import checkpoints
from project import input_fn as inputs, model_fn as model
from project.experiment import ImageClassifier
from project.options import OPTIONS

tf = import_tensorflow()
v1 = tf.compat.v1
QUANTIZATIONS = ("none", "dynamic")


def checkpoint_outputs(checkpoint, params) -> tuple:
    """(images float32 [n, S, S, 3] in [0, 255], labels [n], the checkpoint's probabilities [n, classes]) of eval_data."""
    with tf.Graph().as_default():
        features, labels = v1.data.make_one_shot_iterator(inputs.input_fn(params, tf.estimator.ModeKeys.EVAL)).get_next()
        spec = model.model_fn({"image": features["image"]}, None, tf.estimator.ModeKeys.PREDICT, params)
        fetches = (features["image"], labels, spec.predictions["probabilities"])
        batches = []
        with v1.Session() as session:
            v1.train.Saver().restore(session, checkpoint)
            try:
                while True:
                    batches.append(session.run(fetches))
            except tf.errors.OutOfRangeError:
                pass
    return tuple(np.concatenate(parts) for parts in zip(*batches))


def interpreted(path, images) -> np.ndarray:
    """The probabilities the TensorFlow Lite model at ``path`` (float32 input in [0, 1]) gives for each image."""
    interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (image_input,), (output,) = interpreter.get_input_details(), interpreter.get_output_details()
    probabilities = []
    for image in images:
        interpreter.set_tensor(image_input["index"], image[None] / np.float32(255))
        interpreter.invoke()
        probabilities.append(interpreter.get_tensor(output["index"])[0])
    return np.array(probabilities)


def main(argv) -> int:
    use_graph_mode()
    settings, _ = config.parse(OPTIONS, argv, prog="tflite_study")
    experiment = ImageClassifier()
    params = experiment.make_params(settings.as_dict())
    with checkpoints.held(settings, experiment.model_identity(params), experiment.checkpoint_shapes(params)) as held:
        images, labels, expected = checkpoint_outputs(held.path, params)
        checkpoint = held.name
    print(f"{checkpoint}: {len(labels)} images of {params['eval_data']}, accuracy {np.mean(expected.argmax(1) == labels):.2%}")
    for quantize in QUANTIZATIONS:
        path = os.path.join(settings.output, f"{'float32' if quantize == 'none' else quantize}.tflite")
        if run.main([*argv, "--mode", "export_tflite", "--output", path, "--tflite_quantize", quantize]):
            return 1
        probabilities = interpreted(path, images)
        print(f"{path}: {os.path.getsize(path) / 1e6:.2f} MB, accuracy {np.mean(probabilities.argmax(1) == labels):.2%}, "
              f"same top-1 as the checkpoint {np.mean(probabilities.argmax(1) == expected.argmax(1)):.2%}, "
              f"largest probability difference {np.abs(probabilities - expected).max():.2g}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
