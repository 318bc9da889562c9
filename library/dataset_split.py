"""Which set (train, validation, test) a file of a class folder belongs to, from its name alone.

The split is TF Hub's ``retrain.py`` one (``which_set``): the SHA-1 of the file's path inside its
class folder, with everything from ``_nohash_`` on ignored, placed on a 0-100 scale. It depends
on nothing but that path, so adding or removing other files never moves a file to another set,
the same tree splits the same way on every machine, and variants named ``IMG_1_nohash_0.jpg``,
``IMG_1_nohash_1.jpg`` stay together. Files directly in their class folder get the set
``retrain.py`` gives them.
"""

import hashlib
import re

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SETS = (TRAIN, VALIDATION, TEST)
# retrain.py's MAX_NUM_IMAGES_PER_CLASS: its modulus and scale, kept so that both split a folder alike.
_HASH_BUCKETS = 2**27 - 1
_IGNORED_SUFFIX = re.compile(r"_nohash_.*$")


def position(path_in_class: str) -> float:
    """Where the file falls on the 0-100 scale the percentages cut."""
    name = _IGNORED_SUFFIX.sub("", path_in_class)
    digest = int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16)
    return (digest % (_HASH_BUCKETS + 1)) * (100.0 / _HASH_BUCKETS)


def set_of(path_in_class: str, validation_percentage: float, test_percentage: float) -> str:
    """The set of the file at ``path_in_class`` (e.g. ``holiday/IMG_0102.png``) for these percentages."""
    place = position(path_in_class)
    if place < validation_percentage:
        return VALIDATION
    if place < validation_percentage + test_percentage:
        return TEST
    return TRAIN
