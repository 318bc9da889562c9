"""How well the converter's image digests find copies, on real photos (docs/data-preparation.md, "The same photo in training and
evaluation sets"). Not part of `make bench`; about a minute on 2 cores. Run from the project root:

    .venv/bin/python -m benchmarks.digest_study ../shared/data/flowers_small

Every photo below the folder is digested as the converter stores it (``--max_edge 384``), then copies of it made
nine ways (re-encoded, resized, brightened, cropped, mirrored), each compared with its original: how many are
within ``image_digest.MAX_DIFFERING_BITS`` (found), and how many bits differ. Then every pair of different photos.
"""

import glob
import io
import itertools
import os
import sys

import numpy as np
from PIL import Image, ImageEnhance

from library import image_digest
from library.command_line import OneLineParser
from library.image_files import to_dataset_image

MAX_EDGE = 384


def encoded(image: Image.Image, format: str, **options) -> bytes:
    """``image`` as a file in ``format``."""
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def shrunk(image: Image.Image, factor: int) -> Image.Image:
    """``image`` 1/``factor`` of its size."""
    return image.resize((image.width // factor, image.height // factor), Image.Resampling.LANCZOS)


def cropped(image: Image.Image, fraction: int) -> Image.Image:
    """``image`` without 1/``fraction`` of its width and height on every side."""
    left, top = image.width // fraction, image.height // fraction
    return image.crop((left, top, image.width - left, image.height - top))


COPIES = {
    "PNG of the same picture": lambda image: encoded(image, "PNG"),
    "greyscale JPEG": lambda image: encoded(image.convert("L"), "JPEG", quality=90),
    "JPEG at quality 75": lambda image: encoded(image, "JPEG", quality=75),
    "JPEG at quality 50": lambda image: encoded(image, "JPEG", quality=50),
    "JPEG at quality 30": lambda image: encoded(image, "JPEG", quality=30),
    "half the size": lambda image: encoded(shrunk(image, 2), "JPEG", quality=90),
    "a third of the size at quality 50": lambda image: encoded(shrunk(image, 3), "JPEG", quality=50),
    "brighter by 20 %": lambda image: encoded(ImageEnhance.Brightness(image).enhance(1.2), "JPEG", quality=90),
    "cropped by 5 % a side": lambda image: encoded(cropped(image, 20), "JPEG", quality=90),
    "mirrored": lambda image: encoded(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG", quality=90),
}


def digest(data: bytes) -> str:
    """The digest the converter keeps of the image file ``data``."""
    return to_dataset_image(io.BytesIO(data), MAX_EDGE).digest


def main(argv=None) -> int:
    """Print the table of copies found, then the closest pair of different photos."""
    parser = OneLineParser(prog="python -m benchmarks.digest_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="a folder of photos, searched recursively (e.g. flowers_small)")
    folder = parser.parse_args(argv).folder
    paths = sorted(path for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if os.path.isfile(path))
    originals = []
    for path in paths:
        with open(path, "rb") as handle:
            originals.append(digest(handle.read()))
    limit = image_digest.MAX_DIFFERING_BITS
    print(f"{len(paths)} photos; a copy is found when within {limit} of {image_digest.DIGEST_BITS} bits")
    print("| copy | found | bits differing: median, 99th percentile, most |\n| --- | --- | --- |")
    for name, copy in COPIES.items():
        bits = []
        for path, original in zip(paths, originals):
            with Image.open(path) as image:
                bits.append(image_digest.differing_bits(original, digest(copy(image.convert("RGB")))))
        bits = np.array(bits)
        print(f"| {name} | {(bits <= limit).sum()} / {len(bits)} | "
              f"{np.median(bits):.0f}, {np.percentile(bits, 99):.0f}, {bits.max()} |")
    pairs = [image_digest.differing_bits(*pair) for pair in itertools.combinations(originals, 2)]
    print(f"pairs of different photos: {len(pairs)}, closest {min(pairs)} bits, within {limit}: "
          f"{sum(bits <= limit for bits in pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
