"""The whole classifier as a TensorFlow Lite model, for phones: one image in, the class probabilities out.

Input ``image``: one RGB image [1, S, S, 3] at the model's image size S (``image_size`` of the
params), float32 in [0, 1] or, with ``tflite_input: uint8``, uint8 in [0, 255]. The app
resizes (and crops) the photo itself: decoding and the evaluation crop of the serving
SavedModel (``input_fn.serving_input_receiver_fn``, which takes JPEG bytes) are not
TensorFlow Lite operations. Output ``probabilities``: [1, num_classes], in the order of
``labels.txt``, which is written beside the model.
"""

from library import tflite_export
from library.tensorflow_env import import_tensorflow
from project import model_fn as model

tf = import_tensorflow()
v1 = tf.compat.v1

LABELS_FILE = "labels.txt"


def classifier(params):
    """In the default graph: (the image placeholder ``params["tflite_input"]`` names, the class probabilities)
    of model_fn in PREDICT mode."""
    size = params["image_size"]
    if params["tflite_input"] == "uint8":
        image = v1.placeholder(tf.uint8, [1, size, size, 3], name="image")
        pixels = tf.cast(image, tf.float32)
    else:
        image = v1.placeholder(tf.float32, [1, size, size, 3], name="image")
        pixels = image * 255.0  # model_fn takes the input pipeline's [0, 255]
    spec = model.model_fn({"image": pixels}, None, tf.estimator.ModeKeys.PREDICT, {**params, "top_k": 0})
    return image, tf.identity(spec.predictions["probabilities"], name="probabilities")


def export(params, checkpoint_path: str, output_path: str) -> None:
    """Write the TensorFlow Lite model of a checkpoint to ``output_path``, and labels.txt (the class names) beside it."""
    flatbuffer = tflite_export.convert(lambda: classifier(params), checkpoint_path, params["tflite_quantize"])
    labels = "".join(f"{name}\n" for name in params["class_names"])
    tflite_export.write(output_path, flatbuffer, {LABELS_FILE: labels})
