"""Photo-like benchmark data: random crops of real photographs, re-encoded as JPEGs in class folders.

Random noise decodes at a different speed than photographs (it defeats JPEG's entropy
coding), so the images come from the two photographs scikit-learn ships
(``load_sample_images``: china.jpg and flower.jpg, 640x427). Each image is a random crop
(30-100% of each side), randomly mirrored, scaled to a longer edge of 256-800 pixels and
saved at JPEG quality 70-95, one in ten progressive. At ``--max_edge 384`` about a
quarter of them are baseline JPEGs the converter stores byte for byte; the rest it
decodes at reduced scale, resizes and encodes again, as with a folder of real photos.
The class of an image is its source photograph (folders ``china/`` and ``flower/``).

Generated once per (count, seed, version) and cached: a hidden ``.generated.json`` in
the folder marks a complete set (the converter ignores hidden files).
"""

import io
import json
import os
import shutil

import numpy as np
from PIL import Image

VERSION = 1  # bump when the recipe changes, so cached sets are regenerated
STAMP = ".generated.json"
LONGER_EDGE = (256, 800)
QUALITY = (70, 95)
PROGRESSIVE_FRACTION = 0.1
MIN_SIDE_FRACTION = 0.3


def source_photos() -> dict:
    """{class name: PIL image} of the photographs scikit-learn ships."""
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    return {
        os.path.splitext(os.path.basename(path))[0]: Image.fromarray(pixels)
        for path, pixels in zip(sample.filenames, sample.images)
    }


def photo_like_jpeg(photo: Image.Image, rng: np.random.Generator) -> bytes:
    """One random crop of ``photo``, mirrored at random, scaled and JPEG-encoded with random settings."""
    width, height = photo.size
    crop_width = int(width * rng.uniform(MIN_SIDE_FRACTION, 1.0))
    crop_height = int(height * rng.uniform(MIN_SIDE_FRACTION, 1.0))
    left = int(rng.integers(0, width - crop_width + 1))
    top = int(rng.integers(0, height - crop_height + 1))
    image = photo.crop((left, top, left + crop_width, top + crop_height))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scale = int(rng.integers(*LONGER_EDGE, endpoint=True)) / max(crop_width, crop_height)
    size = (max(1, round(crop_width * scale)), max(1, round(crop_height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    output = io.BytesIO()
    image.save(output, "JPEG", quality=int(rng.integers(*QUALITY, endpoint=True)),
               progressive=bool(rng.random() < PROGRESSIVE_FRACTION))
    return output.getvalue()


def ensure_photos(folder: str, count: int, seed: int = 0) -> str:
    """``folder`` holding ``count`` photo-like JPEGs in class folders; generated only if not cached."""
    description = {"version": VERSION, "count": count, "seed": seed}
    if _stamp(folder) == description:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    photos = source_photos()
    names = sorted(photos)
    rng = np.random.default_rng(seed)
    for index in range(count):
        name = names[index % len(names)]
        path = os.path.join(folder, name, f"{name}_{index:06d}.jpg")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(photo_like_jpeg(photos[name], rng))
    _write_stamp(folder, description)
    return folder


def ensure_hard_linked_copies(source: str, folder: str, copies: int) -> str:
    """``folder`` with ``copies`` hard-linked copies of ``source``'s class folders: a large set in no extra space."""
    description = {"source": os.path.abspath(source), "source_stamp": _stamp(source), "copies": copies}
    if _stamp(folder) == description:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    for class_name in sorted(name for name in os.listdir(source) if not name.startswith(".")):
        files = sorted(os.listdir(os.path.join(source, class_name)))
        for copy in range(copies):
            target = os.path.join(folder, class_name, f"copy{copy:03d}")  # nested folders belong to the class
            os.makedirs(target)
            for name in files:
                os.link(os.path.join(source, class_name, name), os.path.join(target, name))
    _write_stamp(folder, description)
    return folder


def _stamp(folder: str):
    """The description a finished generation left in ``folder``, or None."""
    try:
        with open(os.path.join(folder, STAMP)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_stamp(folder: str, description: dict) -> None:
    """Mark ``folder`` complete: written last, so an interrupted generation is redone."""
    with open(os.path.join(folder, STAMP), "w") as handle:
        json.dump(description, handle)
