"""library.experiment: the optional capabilities the library looks for instead of defaults that raise."""

import pytest

from library.configuration.config import ConfigError
from library.evaluation import recalibration
from library.experiment import MISSING, Experiment, capability


class CoreOnly(Experiment):
    """An experiment with the core of the contract and no optional capability."""

    def make_params(self, values):
        return dict(values)

    def train_examples(self, params):
        return 10

    def model_fn(self, features, labels, mode, params):
        raise AssertionError("not built here")

    def input_fn(self, params, mode, input_context=None):
        raise AssertionError("not built here")

    def predict_input_fn(self, params, source):
        raise AssertionError("not built here")

    def prediction_row(self, prediction, params):
        return {}

    def serving_input_receiver_fn(self, params):
        raise AssertionError("not built here")


class WithInputBenchmark(CoreOnly):
    def benchmark_input(self, params, batches):
        return {"images_per_second": 12.5 * batches}


@pytest.mark.parametrize("name, message", [
    ("recalibration_input_fn", "batch_norm_recalibration_batches: this experiment has no recalibration input; "
                               "set it to 0"),
    ("export_feature_extractor", "export_hub: this experiment has no feature extractor to export"),
    ("export_tflite", "export_tflite: this experiment has no TensorFlow Lite model to export"),
    ("benchmark_input", "benchmark_input: this experiment has no input benchmark"),
])
def test_a_missing_capability_is_a_one_line_error_naming_what_needs_it(name, message):
    with pytest.raises(ConfigError) as raised:
        capability(CoreOnly(), name)
    assert str(raised.value) == message and MISSING[name] == message


def test_a_capability_the_experiment_has_is_its_own_method():
    measure = capability(WithInputBenchmark(), "benchmark_input")
    assert measure({}, 4) == {"images_per_second": 50.0}


def test_recalibration_without_a_recalibration_input_is_refused_before_any_graph_unless_it_is_off():
    assert recalibration.recalibrator(CoreOnly(), {}, batches=0) is None
    with pytest.raises(ConfigError, match="^batch_norm_recalibration_batches: this experiment has no recalibration "
                                          "input; set it to 0$"):
        recalibration.recalibrator(CoreOnly(), {}, batches=2)
