"""Perceptual digests of real photos (scikit-image's): copies match, other photos do not; the search finds them."""

import io

import numpy as np
import pytest
from PIL import Image

from library.data import image_digest
from tests.helpers import photo


def reopened(image: Image.Image, format: str, **options) -> Image.Image:
    """``image`` saved in ``format`` and read back."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return Image.open(io.BytesIO(buffer.getvalue()))


COPIES = {
    "JPEG quality 40": lambda image: reopened(image, "JPEG", quality=40),
    "PNG": lambda image: reopened(image, "PNG"),
    "half size": lambda image: reopened(image.resize((image.width // 2, image.height // 2)), "JPEG", quality=90),
    "greyscale": lambda image: image.convert("L"),
}
EDITS = {
    "mirrored": lambda image: image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "cropped by a tenth": lambda image: image.crop((image.width // 10, image.height // 10, image.width, image.height)),
}
NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"]


@pytest.mark.parametrize("name", NAMES)
def test_copies_of_a_photo_match_and_edits_do_not(name):
    original = image_digest.of(photo(name))
    assert len(original) == image_digest.DIGEST_BITS // 4 and int(original, 16) >= 0
    for copy in COPIES.values():
        assert image_digest.differing_bits(original, image_digest.of(copy(photo(name)))) <= 10
    for edit in EDITS.values():
        assert image_digest.differing_bits(original, image_digest.of(edit(photo(name)))) > image_digest.MAX_DIFFERING_BITS


def test_different_photos_are_far_apart_even_two_views_of_one_scene():
    digests = {name: image_digest.of(photo(name)) for name in NAMES + ["motorcycle_right.png", "retina.jpg"]}
    closest = min(image_digest.differing_bits(digests[a], digests[b]) for a in digests for b in digests if a < b)
    assert closest > 2 * image_digest.MAX_DIFFERING_BITS
    stereo = image_digest.differing_bits(digests["motorcycle_left.png"], digests["motorcycle_right.png"])
    assert stereo > image_digest.MAX_DIFFERING_BITS  # a near-identical but different photo: not a copy


def test_a_plain_picture_has_the_digest_of_any_other_plain_picture():
    assert image_digest.of(Image.new("RGB", (40, 30), "red")) == image_digest.of(Image.new("L", (9, 9), 7)) == "0" * 64


def random_digests(count, seed=0) -> list:
    return [bytes(row).hex() for row in np.random.default_rng(seed).integers(0, 256, (count, 32), dtype=np.uint8)]


def flipped(digest: str, bits: int) -> str:
    """``digest`` with its first ``bits`` bits inverted."""
    return f"{int(digest, 16) ^ (((1 << bits) - 1) << (256 - bits)):064x}"


def test_the_index_finds_the_nearest_digest_within_the_limit_across_blocks(monkeypatch):
    monkeypatch.setattr(image_digest, "_INDEX_BLOCK", 7)  # 50 digests: 8 blocks, the last one short
    indexed = random_digests(50)
    index = image_digest.Index([(f"file{i}", digest) for i, digest in enumerate(indexed[:30])])
    index.add([(f"file{i}", digest) for i, digest in enumerate(indexed) if i >= 30])
    limit = image_digest.MAX_DIFFERING_BITS
    queries = [indexed[3], flipped(indexed[48], limit), flipped(indexed[20], limit + 1), *random_digests(2, seed=1)]
    assert index.nearest(queries) == [("file3", 0), ("file48", limit), None, None, None]
    assert index.nearest([]) == []
    assert image_digest.Index().nearest(queries[:2]) == [None, None]


def test_a_malformed_digest_is_a_value_error():
    with pytest.raises(ValueError):
        image_digest.Index([("a", "abc")])
    with pytest.raises(ValueError):
        image_digest.Index([("a", "zz" * 32)])
    index = image_digest.Index([("a", "0" * 64)])
    with pytest.raises(ValueError):
        index.add([("b", "1" * 63)])
    assert index.names == ["a"]  # nothing half added
