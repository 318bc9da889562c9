"""A perceptual digest of a picture, and the search for near-identical pictures among many.

The digest is a difference hash: the picture in grey, reduced by 2, 4 or 8 (box average, as a JPEG
decoder does at those scales), then to a 17x16 thumbnail, one bit for each pair of horizontal
neighbours, set where the right one is brighter. 256 bits, written as 64 hex digits.
Two digests differing in at most :data:`MAX_DIFFERING_BITS` bits are taken for the same picture.
On flowers_small's 1,000 photos (``benchmarks/digest_study.py``; docs/data-preparation.md, "The same photo in
training and evaluation sets"), copies re-encoded as JPEG down to quality 50, as PNG or in grey,
or at half the size, all stayed within it (99 % within 24 bits), while no two different photos
came closer than 64 bits. Crops, flips and heavy edits move most bits; plain one-colour pictures
all have the same digest.
"""

import numpy as np
from PIL import Image

DIGEST_BITS = 256
MAX_DIFFERING_BITS = 40
_THUMBNAIL_ROWS, _THUMBNAIL_COLUMNS = 16, 17  # 16 comparisons a row
# The digest first reduces a picture by a power of 2 to no less than twice the thumbnail (for its filter); a JPEG
# may be decoded at that scale already (``Image.draft("L", SMALLEST_PICTURE)``), at a fraction of a full decode.
SMALLEST_PICTURE = (2 * _THUMBNAIL_COLUMNS, 2 * _THUMBNAIL_ROWS)
_INDEX_BLOCK = 16384  # indexed digests compared at once: bounds the memory a search takes (4 bytes x 256 bits each)


def of(image: Image.Image) -> str:
    """The digest of ``image`` (any mode): 64 hex digits."""
    grey = image.convert("L")
    factor = _reduction(grey.size)
    if factor > 1:
        grey = grey.reduce(factor)
    thumbnail = grey.resize((_THUMBNAIL_COLUMNS, _THUMBNAIL_ROWS), Image.Resampling.LANCZOS)
    pixels = np.frombuffer(thumbnail.tobytes(), np.uint8).reshape(_THUMBNAIL_ROWS, _THUMBNAIL_COLUMNS)
    return np.packbits(pixels[:, 1:] > pixels[:, :-1]).tobytes().hex()


def _reduction(size: tuple) -> int:
    """The largest of 8, 4 and 2 that keeps ``size`` at least SMALLEST_PICTURE, else 1: the factors a JPEG decoder
    reduces by (``Image.draft``), so a JPEG decoded small and a full picture are reduced alike."""
    width, height = SMALLEST_PICTURE
    return next((factor for factor in (8, 4, 2) if size[0] // width >= factor and size[1] // height >= factor), 1)


def differing_bits(first: str, second: str) -> int:
    """How many bits two digests differ in: at most MAX_DIFFERING_BITS for the same picture."""
    return (int(first, 16) ^ int(second, 16)).bit_count()


def _signs(digests: list) -> np.ndarray:
    """int8 [len(digests), DIGEST_BITS]: +1 for a set bit, -1 for a clear one; ValueError for a malformed digest."""
    packed = np.frombuffer(bytes.fromhex("".join(digests)), np.uint8)
    if packed.size != len(digests) * DIGEST_BITS // 8:
        raise ValueError(f"a digest is not {DIGEST_BITS // 4} hex digits")
    return np.unpackbits(packed.reshape(len(digests), DIGEST_BITS // 8), axis=1).astype(np.int8) * 2 - 1


class Index:
    """Named digests, searched for the one nearest a new picture's; about 256 bytes a digest."""

    def __init__(self, named_digests: list = ()):
        """``named_digests``: (name, digest) pairs; ValueError if a digest is malformed."""
        self.names = []
        self._signs = _signs([])
        self.add(named_digests)

    def add(self, named_digests: list) -> None:
        """Index more (name, digest) pairs; ValueError if a digest is malformed."""
        signs = _signs([digest for _, digest in named_digests])
        self.names += [name for name, _ in named_digests]
        self._signs = np.concatenate([self._signs, signs])

    def nearest(self, digests: list) -> list:
        """For each of ``digests``, (name, differing bits) of the nearest indexed digest, or None if none is
        within MAX_DIFFERING_BITS."""
        closest = np.full(len(digests), DIGEST_BITS + 1, np.int64)
        which = np.zeros(len(digests), np.int64)
        if digests and self.names:
            queries = _signs(digests).astype(np.float32)
            rows = np.arange(len(digests))
            for start in range(0, len(self.names), _INDEX_BLOCK):
                agreement = queries @ self._signs[start : start + _INDEX_BLOCK].astype(np.float32).T
                nearest = agreement.argmax(axis=1)  # a.b = bits - 2 x differing bits: the most agreement is nearest
                distance = np.rint((DIGEST_BITS - agreement[rows, nearest]) / 2).astype(np.int64)
                better = distance < closest
                closest[better], which[better] = distance[better], start + nearest[better]
        return [(self.names[index], int(distance)) if distance <= MAX_DIFFERING_BITS else None
                for index, distance in zip(which, closest)]
