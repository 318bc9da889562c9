"""project.feature_extractor: project network names, module paths and their input sizes."""

import pytest
import tensorflow_hub as hub

from library import hub_module
from project import feature_extractor
from project.networks import NETWORKS

PARAMS = {"hub_module": "small_cnn", "image_size": 24, "width_multiplier": 1.0, "random_seed": 0}


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    """small_cnn exported as a module for 40x40 images."""
    path = str(tmp_path_factory.mktemp("hub") / "small_cnn")
    hub_module.export_spec(hub_module.create_spec(NETWORKS["small_cnn"], 40, PARAMS), path)
    return path


def test_project_network_is_built_at_the_configured_size():
    assert hub.get_expected_image_size(feature_extractor.module_spec(PARAMS)) == [24, 24]
    assert feature_extractor.input_image_size(PARAMS) == 24


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_module_directory_brings_its_own_image_size(module_dir, scheme):
    params = {**PARAMS, "hub_module": scheme + module_dir}
    assert hub.get_expected_image_size(feature_extractor.module_spec(params)) == [40, 40]
    assert feature_extractor.input_image_size(params) == 40


@pytest.mark.parametrize("name", ["missing", "empty"])
def test_a_path_that_is_no_module_is_a_one_line_error(tmp_path, name):
    (tmp_path / "empty").mkdir()
    handle = str(tmp_path / name)
    with pytest.raises(ValueError) as error:
        feature_extractor.input_image_size({**PARAMS, "hub_module": handle})
    assert str(error.value) == (
        f"hub_module '{handle}' is neither a project network (small_cnn, mobilenet_v2) nor a TF1 Hub module "
        "directory (no tfhub_module.pb there); fix the path, or write a module with "
        "`python -m library.hub_module` or `run.py --mode export_hub`"
    )
