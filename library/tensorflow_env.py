"""Import TensorFlow once, configured for this scaffold, without its start-up noise.

TensorFlow 2.15's pip build prints CUDA plugin registration errors and a TensorRT
warning on every import, even on machines without a GPU. They are not errors of the
user's run, so they are dropped; anything else written to stderr during the import is
passed through unchanged, so real problems stay visible.
"""

import contextlib
import logging
import os
import re
import sys
import tempfile
import warnings

_IMPORT_NOISE = re.compile(
    r"Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning: Could not find TensorRT"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers on your machine"
)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern):
    """Capture file descriptor 2 (C++ logging) and re-emit every line that is not ``noise``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _DeprecationFilter(logging.Filter):
    """Drop TensorFlow's 'is deprecated and will be removed' notices."""

    def filter(self, record):
        message = record.getMessage()
        return "deprecat" not in message and "removed in a future version" not in message


def import_tensorflow():
    """Return the ``tensorflow`` module, imported with quiet, still-honest logging.

    Importing changes no mode: the entry points switch the process to TF1 graph mode with
    :func:`use_graph_mode`, so importing a module of this scaffold never does.
    """
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
    else:
        # INFO lines off; warnings and errors stay. Users may set their own level.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        # The default CPU allocator page-faults on every fresh image buffer; BFC reuses them.
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
        with filtered_stderr(_IMPORT_NOISE):
            import tensorflow as tf
    # Estimator's INFO chatter is replaced by the run loop's own progress; warnings stay,
    # except the deprecation notices for the tf.compat.v1 APIs this scaffold uses on purpose.
    logger = tf.get_logger()
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _DeprecationFilter) for f in logger.filters):
        logger.addFilter(_DeprecationFilter())
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow_hub")
    return tf


def use_graph_mode():
    """Switch this process to TF1 graph mode, as the scaffold's entry points (run.py, the hub command line) run."""
    import_tensorflow().compat.v1.disable_eager_execution()


def first_line(error) -> str:
    """The line of a TensorFlow error's message that says what went wrong (graph errors add a page of context)."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:]):
        if following.startswith("[["):  # the node that failed follows the cause
            return line
    return lines[0] if lines else type(error).__name__
