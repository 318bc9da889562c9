"""library.training.tflite_export: a checkpoint's graph converted to TensorFlow Lite, float and quantized, and written beside its files."""

import os

import numpy as np

from library.training import tflite_export
from tests.helpers import tf

v1 = tf.compat.v1
FEATURES = 64  # a 64x64 kernel: 4,096 weights, above the size dynamic-range quantization leaves as float


def dense_graph():
    """(input [1, FEATURES], output relu(input @ kernel + 1)) with the kernel a variable of the checkpoint."""
    inputs = v1.placeholder(tf.float32, [1, FEATURES], name="inputs")
    kernel = v1.get_variable("kernel", [FEATURES, FEATURES])
    return inputs, tf.identity(tf.nn.relu(tf.matmul(inputs, kernel) + 1.0), name="outputs")


def checkpoint_of_dense_graph(directory):
    """(checkpoint path, its kernel's values) of dense_graph with random weights."""
    with tf.Graph().as_default():
        dense_graph()
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            path = v1.train.Saver().save(session, os.path.join(directory, "model.ckpt"))
            return path, session.run(v1.global_variables()[0])


def interpret(flatbuffer, inputs):
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]), interpreter.get_tensor_details()


def test_the_model_computes_with_the_checkpoints_variables_and_dynamic_quantization_stores_int8_weights(tmp_path, capfd):
    checkpoint, kernel = checkpoint_of_dense_graph(str(tmp_path))
    inputs = np.random.default_rng(0).uniform(size=[1, FEATURES]).astype(np.float32)
    expected = np.maximum(inputs @ kernel + 1, 0)
    capfd.readouterr()
    float_model = tflite_export.convert(dense_graph, checkpoint, "none")
    quantized_model = tflite_export.convert(dense_graph, checkpoint, "dynamic")
    assert capfd.readouterr().err == ""  # the converter's routine notes are dropped
    outputs, tensors = interpret(float_model, inputs)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert np.float32 in {tensor["dtype"] for tensor in tensors} and np.int8 not in {tensor["dtype"] for tensor in tensors}
    outputs, tensors = interpret(quantized_model, inputs)
    np.testing.assert_allclose(outputs, expected, rtol=0.05, atol=0.05)  # int8 weights: about 1% of their range
    assert not np.allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    assert [FEATURES, FEATURES] in [tensor["shape"].tolist() for tensor in tensors if tensor["dtype"] == np.int8]
    assert len(quantized_model) < len(float_model) / 3  # 4 bytes a weight become 1


def test_write_puts_the_companion_files_first_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    written = []
    original = tflite_export.atomic_file.write_bytes
    monkeypatch.setattr(tflite_export.atomic_file, "write_bytes",
                        lambda path, data: (written.append(os.path.basename(path)), original(path, data)))
    tflite_export.write(str(tmp_path / "out" / "model.tflite"), b"model", {"labels.txt": "a\nb\n"})
    assert written == ["labels.txt", "model.tflite"]
    assert sorted(os.listdir(tmp_path / "out")) == ["labels.txt", "model.tflite"]
    assert (tmp_path / "out" / "model.tflite").read_bytes() == b"model"
    assert (tmp_path / "out" / "labels.txt").read_text() == "a\nb\n"
