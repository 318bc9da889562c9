"""project.feature_extractor: project network names, module paths, their input sizes, and what is refused."""

import pytest
import tensorflow_hub as hub

from library.hub import hub_module
from project import feature_extractor
from project.networks import NETWORKS

PARAMS = {"hub_module": "small_cnn", "image_size": 24, "width_multiplier": 1.0, "random_seed": 0,
          "fine_tuning": True, "hub_signature": None, "hub_output": None, "head_epochs": 0,
          "fine_tuning_batch_norm": None}


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    """small_cnn exported with fresh variables as a module for 40x40 images."""
    path = str(tmp_path_factory.mktemp("hub") / "small_cnn")
    hub_module.export_spec(hub_module.create_spec(NETWORKS["small_cnn"], 40, PARAMS), path)
    return path


def test_project_network_is_built_at_the_configured_size_once_per_process():
    extractor = feature_extractor.resolve(PARAMS)
    assert hub.get_expected_image_size(extractor.spec) == [24, 24]
    assert feature_extractor.input_image_size(PARAMS) == 24
    assert feature_extractor.resolve(dict(PARAMS)).spec is extractor.spec
    assert feature_extractor.resolve({**PARAMS, "image_size": 32}).spec is not extractor.spec
    assert feature_extractor.describe(PARAMS) == (
        "feature extractor: small_cnn (random weights, trained from scratch); signature image_feature_vector, "
        "output default: 64 features; input 24x24 (image_size); fine-tuned with the head, batch norm on batch statistics "
        "(moving averages updated)")


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_module_directory_brings_its_own_image_size(module_dir, scheme):
    params = {**PARAMS, "hub_module": scheme + module_dir}
    assert hub.get_expected_image_size(feature_extractor.resolve(params).spec) == [40, 40]
    assert feature_extractor.input_image_size(params) == 40


def test_the_start_of_a_run_says_what_is_used(module_dir):
    params = {**PARAMS, "hub_module": module_dir}
    assert feature_extractor.check(params) == [f"warning: image_size 24 is not used: module {module_dir} takes 40x40 images"]
    assert feature_extractor.describe(params) == (
        f"feature extractor: {module_dir} (random weights, trained from scratch); signature image_feature_vector, "
        "output default: 64 features; input 40x40 (fixed by the module); fine-tuned with the head, batch norm on batch "
        "statistics (moving averages updated)")


@pytest.mark.parametrize("handle", ["small_cnn", "mobilenet_v2", "module"])
def test_random_weights_with_a_frozen_module_are_refused(module_dir, handle):
    handle = module_dir if handle == "module" else handle
    with pytest.raises(ValueError) as error:
        feature_extractor.check({**PARAMS, "hub_module": handle, "fine_tuning": False})
    assert str(error.value).startswith(
        f"hub_module {handle} starts from random weights and fine_tuning is False: only the head would train, "
        "on random features; train it from scratch with --fine_tuning, or use a pretrained module")


@pytest.mark.parametrize("name", ["missing", "empty"])
def test_a_path_that_is_no_module_is_a_one_line_error(tmp_path, name):
    (tmp_path / "empty").mkdir()
    handle = str(tmp_path / name)
    with pytest.raises(ValueError) as error:
        feature_extractor.input_image_size({**PARAMS, "hub_module": handle})
    assert str(error.value) == (
        f"hub_module '{handle}' is neither a project network ({', '.join(NETWORKS)}) nor a TF1 Hub module "
        "directory (no tfhub_module.pb there); fix the path, or write a module with "
        "`python -m library.hub.write_module` or `run.py --mode export_hub`"
    )
