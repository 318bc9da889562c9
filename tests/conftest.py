"""Shared test setup: TensorFlow in TF1 graph mode, quiet, as in the product."""

import atexit
import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# Pretrained networks' modules are built into TF Hub's module cache: once per test session (and its subprocesses),
# in a folder of its own, never into the user's cache.
os.environ["TFHUB_CACHE_DIR"] = tempfile.mkdtemp(prefix="tfhub-cache-")
atexit.register(shutil.rmtree, os.environ["TFHUB_CACHE_DIR"], True)

from library.tensorflow_env import import_tensorflow, use_graph_mode  # noqa: E402

tf = import_tensorflow()
use_graph_mode()  # as the product's entry points run


@pytest.fixture(autouse=True)
def fresh_graph():
    """Every test builds its ops in a graph of its own."""
    with tf.Graph().as_default() as graph:
        yield graph
