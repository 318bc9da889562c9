"""A TensorFlow Lite model of a graph-mode model: a checkpoint's variables restored into a session, frozen, converted.

The project builds the graph (an input placeholder and the output tensor); this module
knows nothing of what they mean. ``TFLiteConverter.from_session`` freezes the variables
the output depends on into constants and converts that subgraph only, so training-only
parts of the graph (initializers, summaries) never reach the model. Quantization
``dynamic`` stores the large weight tensors as int8 (TensorFlow Lite's dynamic-range
quantization: about 4x smaller weights, activations stay float, no calibration data).
"""

import os
import re

from library import atomic_file
from library.tensorflow_env import filtered_stderr, import_tensorflow

tf = import_tensorflow()
v1 = tf.compat.v1

# What the converter's C++ prints on every conversion that went well: the freezing's note that the initializers
# are gone, two ignored TF1 flags, and a summary of the constants it kept as such.
_CONVERTER_NOISE = re.compile(
    r"Init node \S+ doesn't exist in graph"
    r"|Ignored (output_format|drop_control_dependency)\."
    r"|^Summary on the non-converted ops:|^-+$|^ \* Accepted dialects:|^ \* Non-Converted Ops:|^ \* \d+ \w+ ops$"
    r"|^- [\w.]+: +\d+ occurrences|^ *\((\w+: \d+(, )?)+\)$|^\s*$"
)


def convert(build, checkpoint_path: str, quantize: str) -> bytes:
    """The TensorFlow Lite flatbuffer of the graph ``build()`` makes, returning its (input, output) tensors, with
    the variables of ``checkpoint_path``; ``quantize``: ``none`` or ``dynamic`` (run_options.TFLITE_QUANTIZATIONS)."""
    with tf.Graph().as_default() as graph:
        inputs, outputs = build()
        saver = v1.train.Saver()
        with v1.Session(graph=graph) as session:
            saver.restore(session, checkpoint_path)
            with filtered_stderr(_CONVERTER_NOISE):
                converter = v1.lite.TFLiteConverter.from_session(session, [inputs], [outputs])
                if quantize == "dynamic":
                    converter.optimizations = [tf.lite.Optimize.DEFAULT]
                return converter.convert()


def write(path: str, model: bytes, beside: dict) -> None:
    """Write the files of ``beside`` ({file name: text}) into the model's folder, then the model at ``path``, each
    atomically: a model file is only ever there with its companions complete."""
    folder = os.path.dirname(path)
    for name, text in beside.items():
        atomic_file.write_text(os.path.join(folder, name), text)
    atomic_file.write_bytes(path, model)
