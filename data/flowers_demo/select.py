"""How this subset was picked from flowers_small (run from the project root: python data/flowers_demo/select.py).

Test: 20 photos of each class from flowers_small/test. Train: n photos of each class from
flowers_small/train, n the largest count whose photos and attribution file fit in 4.9 MB (the folder: at most 5 MB). Each
class's photos are drawn at random with a fixed seed (random.Random(0).sample of the sorted
file names), never by accuracy. Files are copied byte for byte.
"""

import os
import random
import shutil
import sys

SOURCE = os.path.join("..", "shared", "data", "flowers_small")
TARGET = os.path.join("data", "flowers_demo")
TEST_PER_CLASS = 20
LIMIT_BYTES = 4_900_000  # 5 MB for the whole folder, this script included, with room to spare
LICENCE = "https://creativecommons.org/licenses/by/2.0/"


def sample(split, per_class):
    """{class: [file name, ...]} drawn with the fixed seed."""
    folder = os.path.join(SOURCE, split)
    return {name: random.Random(0).sample(sorted(os.listdir(os.path.join(folder, name))), per_class)
            for name in sorted(os.listdir(folder))}


def attribution(picked):
    """The attribution file: each photo's Flickr page (its file name starts with the photo id) and the licence."""
    lines = ["# Attribution", "",
             "Photographs from Flickr, under the Creative Commons Attribution 2.0 licence "
             f"({LICENCE}), as distributed in TensorFlow's `flower_photos` archive; picked by `select.py`. "
             "Each file's name starts with its Flickr photo id; its page credits the photographer.", "",
             "| file | photo page |", "| --- | --- |"]
    for split, classes in picked.items():
        for name, files in classes.items():
            lines += [f"| {split}/{name}/{file} | https://www.flickr.com/photo.gne?id={file.split('_')[0]} |"
                      for file in sorted(files)]
    return "\n".join(lines) + "\n"


def size(picked):
    photos = sum(os.path.getsize(os.path.join(SOURCE, split, name, file))
                 for split, classes in picked.items() for name, files in classes.items() for file in files)
    return photos + len(attribution(picked).encode())


def main():
    per_class = 1
    while size({"train": sample("train", per_class + 1), "test": sample("test", TEST_PER_CLASS)}) <= LIMIT_BYTES:
        per_class += 1
    picked = {"train": sample("train", per_class), "test": sample("test", TEST_PER_CLASS)}
    for split, classes in picked.items():
        shutil.rmtree(os.path.join(TARGET, split), ignore_errors=True)
        for name, files in classes.items():
            os.makedirs(os.path.join(TARGET, split, name))
            for file in files:
                shutil.copyfile(os.path.join(SOURCE, split, name, file), os.path.join(TARGET, split, name, file))
    with open(os.path.join(TARGET, "ATTRIBUTION.md"), "w") as handle:
        handle.write(attribution(picked))
    print(f"{per_class} training and {TEST_PER_CLASS} test photos per class, {size(picked):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
