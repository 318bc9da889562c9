"""``run.py --mode benchmark_input``: the training input pipeline's speed alone, whether it can keep a model fed.

What the pipeline's rate is judged against (the same per-image work without a pipeline) is
measured by ``benchmarks/input_kernels.py``, row 2 of ``make bench``.
"""

import time

from library.tensorflow_env import import_tensorflow
from project.input_fn import ModeKeys, input_fn

tf = import_tensorflow()

# Batches run before benchmark timing starts: fills the shuffle buffer and lets autotuning settle.
BENCHMARK_WARMUP_BATCHES = 10


def images_per_second(step, images_per_step, steps, setup=(), config=None):
    """Images/s of running ``step`` ``steps`` times in a new session, after running ``setup`` and a warm-up."""
    with tf.compat.v1.Session(config=config) as session:
        session.run(setup)
        for _ in range(BENCHMARK_WARMUP_BATCHES):
            session.run(step)
        start = time.perf_counter()
        for _ in range(steps):
            session.run(step)
        return images_per_step * steps / (time.perf_counter() - start)


def benchmark_input(params, batches):
    """Images/s of the training input pipeline alone (no model), to tell whether it can keep a model fed."""
    with tf.Graph().as_default():
        iterator = tf.compat.v1.data.make_initializable_iterator(input_fn(params, ModeKeys.TRAIN))
        step = tf.group(tf.nest.flatten(iterator.get_next()))
        rate = images_per_second(step, params["train_batch_size"], batches, setup=iterator.initializer)
    return {"images_per_sec": rate, "batches": batches, "batch_size": params["train_batch_size"],
            "input": params["train_data"]}
