"""The split by file name: retrain.py's hash, stable, the same everywhere."""

import hashlib
import re

from library import dataset_split


def retrain_py_which_set(file_name, validation_percentage, testing_percentage):
    """TF Hub's retrain.py ``which_set``, as published (tensorflow/hub, examples/image_retraining/retrain.py)."""
    max_num_images_per_class = 2**27 - 1
    hash_name = re.sub(r"_nohash_.*$", "", file_name)
    hash_name_hashed = hashlib.sha1(hash_name.encode("utf-8")).hexdigest()
    percentage_hash = ((int(hash_name_hashed, 16) % (max_num_images_per_class + 1))
                       * (100.0 / max_num_images_per_class))
    if percentage_hash < validation_percentage:
        return "validation"
    if percentage_hash < (testing_percentage + validation_percentage):
        return "testing"
    return "training"


NAMES = [f"IMG_{index:04d}.jpg" for index in range(400)] + ["猫.png", "a b.jpeg", "x_nohash_3.jpg"]


def test_files_directly_in_a_class_folder_go_where_retrain_py_puts_them():
    renamed = {"training": "train", "validation": "validation", "testing": "test"}
    for validation, test in [(10, 10), (20, 0), (0, 35.5)]:
        sets = [dataset_split.set_of(name, validation, test) for name in NAMES]
        assert sets == [renamed[retrain_py_which_set(name, validation, test)] for name in NAMES]
    counts = {name: [dataset_split.set_of(n, 20, 10) for n in NAMES].count(name) for name in dataset_split.SETS}
    assert counts == {"train": 267, "validation": 100, "test": 36}  # 66 / 25 / 9 % of 403: a hash, not a quota


def test_everything_from_nohash_on_is_ignored_so_variants_stay_together():
    positions = {dataset_split.position(name) for name in ("IMG_7_nohash_0.jpg", "IMG_7_nohash_1.jpg", "IMG_7")}
    assert len(positions) == 1
    assert dataset_split.position("IMG_7.jpg") not in positions


def test_nested_files_are_placed_by_their_path_inside_the_class_folder():
    assert dataset_split.position("holiday/IMG_0102.png") == dataset_split.position("holiday/IMG_0102.png")
    assert dataset_split.position("holiday/IMG_0102.png") != dataset_split.position("IMG_0102.png")
