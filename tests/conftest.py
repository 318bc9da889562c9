"""Shared test setup: TensorFlow in TF1 graph mode, quiet, as in the product."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from library.tensorflow_env import import_tensorflow, use_graph_mode  # noqa: E402

tf = import_tensorflow()
use_graph_mode()  # as the product's entry points run


@pytest.fixture(autouse=True)
def fresh_graph():
    """Every test builds its ops in a graph of its own."""
    with tf.Graph().as_default() as graph:
        yield graph
