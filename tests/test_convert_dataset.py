"""convert_dataset.py end to end: a messy folder in, valid shards, labels and manifest out."""

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import ExifTags, Image

import convert_dataset
from library.data import dataset_split, image_digest
from library.data.tfrecord_writer import records_digest
from project import record_schema
from tests.helpers import ROOT, tf, RED, BLUE, WHITE, encoded, halves, noise, photo

MAX_EDGE = 64
INT64_KEYS = (record_schema.HEIGHT, record_schema.WIDTH, record_schema.CHANNELS, record_schema.LABEL)
BYTES_KEYS = (record_schema.ENCODED, record_schema.FORMAT, record_schema.CLASS_TEXT, record_schema.FILENAME)
SHARD = re.compile(r"(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord")


def save(path, image: Image.Image, format: str, **options) -> None:
    """Save ``image`` at ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format, **options)


def write(path, data: bytes) -> None:
    """Write ``data`` at ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def run(*argv) -> tuple:
    """(exit code, stdout, stderr) of ``convert_dataset.main`` run in this process (argparse's own errors exit)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = convert_dataset.main([str(arg) for arg in argv])
        except SystemExit as exit:
            code = exit.code
    return code, stdout.getvalue(), stderr.getvalue()


def convert(dataset, output, *extra) -> tuple:
    """Run the converter with the usual arguments (name ``train``, MAX_EDGE) plus ``extra``."""
    return run("--dataset_dir", dataset, "--tfrecord_filename", "train", "--tfrecord_dir", output,
               "--max_edge", MAX_EDGE, *extra)


def shard_paths(directory, name="train") -> list:
    """The finished shards of set ``name`` in ``directory``, in order."""
    return sorted(str(p) for p in directory.iterdir() if (m := SHARD.fullmatch(p.name)) and m["name"] == name)


def read_records(directory, name="train") -> list:
    """Every record of set ``name`` in shard order, parsed, with its JPEG decoded by TensorFlow."""
    jpeg = tf.compat.v1.placeholder(tf.string)
    decoded = tf.image.decode_jpeg(jpeg)
    parsed = []
    with tf.compat.v1.Session() as session:
        for path in shard_paths(directory, name):
            for serialized in tf.compat.v1.io.tf_record_iterator(path):
                feature = tf.train.Example.FromString(serialized).features.feature
                record = {key: feature[key].int64_list.value[0] for key in INT64_KEYS}
                record.update({key: feature[key].bytes_list.value[0] for key in BYTES_KEYS})
                record["pixels"] = session.run(decoded, {jpeg: record[record_schema.ENCODED]})
                record["shard"] = os.path.basename(path)
                parsed.append(record)
    return parsed


# --- a messy folder, converted once for the tests that inspect the result ---

USABLE = {  # file -> (height, width) stored
    "cat/photo.jpg": (32, 48),
    "cat/big.jpg": (32, 64),
    "cat/sideways.jpg": (30, 60),
    "cat/alpha.png": (16, 32),
    "cat/animated.gif": (16, 32),
    "cat/bitmap.bmp": (16, 32),
    "cat/scan.tiff": (16, 32),
    "cat/web.webp": (16, 32),
    "cat/gray.png": (16, 32),
    "cat/palette.png": (16, 32),
    "cat/cmyk.jpg": (16, 32),
    "cat/deep-16-bit.png": (16, 32),
    "cat/nested/deeper/inner.jpg": (20, 30),
    "dog/猫と犬 ünïcode.jpg": (20, 30),
    "vögel/🐦.png": (20, 30),
}
SKIPPED = {  # file -> words of the reason
    "dog/zero-byte.jpg": "empty file",
    "dog/truncated.jpg": "truncated",
    "dog/corrupt.png": "damaged image",
    "dog/notes.txt": "not an image",
    "dog/bomb.png": "decompression bomb",
    "cat/loop": "links to a folder already included",
    "dog/pipe.jpg": "a FIFO, not a regular file",
}
PIXEL_LIMIT = 100_000  # Pillow refuses images over twice this; the bomb has 240,000 pixels


def build_messy_dataset(root) -> None:
    """Every case of real folders: formats, modes, rotation, damage, hidden files, links, names."""
    save(root / "cat/photo.jpg", noise((48, 32)), "JPEG")
    save(root / "cat/big.jpg", noise((200, 100)), "JPEG")
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    save(root / "cat/sideways.jpg", halves((60, 30), RED, BLUE).transpose(Image.Transpose.ROTATE_90), "JPEG",
         exif=exif, quality=95)
    save(root / "cat/alpha.png", halves((32, 16), (0, 0, 0, 0), (*RED, 255), "RGBA"), "PNG")
    save(root / "cat/animated.gif", Image.new("RGB", (32, 16), RED), "GIF", save_all=True,
         append_images=[Image.new("RGB", (32, 16), BLUE)])
    save(root / "cat/bitmap.bmp", Image.new("RGB", (32, 16), RED), "BMP")
    save(root / "cat/scan.tiff", Image.new("RGB", (32, 16), RED), "TIFF")
    save(root / "cat/web.webp", Image.new("RGBA", (32, 16), (*RED, 128)), "WEBP")
    save(root / "cat/gray.png", Image.new("L", (32, 16), 90), "PNG")
    save(root / "cat/palette.png", Image.new("RGB", (32, 16), RED).convert("P"), "PNG")
    save(root / "cat/cmyk.jpg", Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "JPEG")
    save(root / "cat/deep-16-bit.png", Image.fromarray(np.full((16, 32), 40000, np.uint16)), "PNG")
    save(root / "cat/nested/deeper/inner.jpg", noise((30, 20)), "JPEG", progressive=True)
    save(root / "cat/.hidden.jpg", noise((30, 20)), "JPEG")
    os.symlink("..", root / "cat/loop")
    save(root / "dog/猫と犬 ünïcode.jpg", noise((30, 20)), "JPEG")
    write(root / "dog/zero-byte.jpg", b"")
    write(root / "dog/truncated.jpg", encoded(noise((40, 40)), "JPEG")[:-500])
    save(root / "dog/corrupt.png", noise((40, 40)), "PNG")
    write(root / "dog/corrupt.png", (root / "dog/corrupt.png").read_bytes()[:60] + bytes(200))  # pixel data zeroed
    write(root / "dog/notes.txt", "collected at the zoo\n".encode())
    save(root / "dog/bomb.png", Image.new("RGB", (600, 400)), "PNG")
    os.mkfifo(root / "dog/pipe.jpg")  # opening it would wait for a writer forever
    save(root / "vögel/🐦.png", noise((30, 20)), "PNG")
    (root / "empty").mkdir()
    save(root / ".hidden_folder/x.jpg", noise((30, 20)), "JPEG")
    write(root / "README.txt", b"my photos\n")


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """(folder, exit code, stdout, stderr) of converting the messy dataset into its own folder."""
    root = tmp_path_factory.mktemp("messy")
    build_messy_dataset(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", PIXEL_LIMIT)  # handed on to the worker processes
        outcome = convert(root, root, "--num_workers", 2)
    return (root, *outcome)


@pytest.fixture(scope="module")
def messy_records(messy):
    """The records of the messy dataset's shards (read in a graph of their own: this outlives a test's)."""
    with tf.Graph().as_default():
        return read_records(messy[0])


def manifest_of(directory, name="train") -> dict:
    """The parsed manifest of set ``name``."""
    return json.loads((directory / f"{name}-manifest.json").read_text())


def test_the_run_succeeds_and_reports_what_it_did(messy):
    _, code, stdout, stderr = messy
    assert code == 0
    summary = r"images: 15, skipped: 7, shards: 8, size: \d+\.\d MB, speed: \d+ images/s, output: .*\n"
    assert re.fullmatch(summary, stdout)
    assert "files skipped (not usable images): 7; each is listed with its reason in" in stderr
    assert "warning: class folder empty has no usable images" in stderr
    assert "Traceback" not in stderr


def test_output_is_shards_labels_and_manifest_and_nothing_else(messy):
    root = messy[0]
    outputs = sorted(p.name for p in root.iterdir() if p.is_file())
    shards = [f"train-{i:05d}-of-00008.tfrecord" for i in range(8)]
    assert outputs == sorted(["README.txt", "labels.txt", "train-manifest.json", *shards])
    assert record_schema.read_labels(str(root / "labels.txt")) == ["cat", "dog", "empty", "vögel"]


def test_every_usable_image_is_one_record_with_consistent_fields(messy_records):
    labels = ["cat", "dog", "empty", "vögel"]
    assert sorted(r[record_schema.FILENAME].decode() for r in messy_records) == sorted(USABLE)
    for record in messy_records:
        filename = record[record_schema.FILENAME].decode()
        class_name = record[record_schema.CLASS_TEXT].decode()
        assert class_name == filename.split("/")[0]
        assert record[record_schema.LABEL] == labels.index(class_name)
        assert record[record_schema.FORMAT] == b"jpeg"
        assert (record[record_schema.HEIGHT], record[record_schema.WIDTH]) == USABLE[filename]
        assert record["pixels"].shape == (*USABLE[filename], 3) and record[record_schema.CHANNELS] == 3


def test_records_hold_the_right_pixels(messy, messy_records):
    by_name = {r[record_schema.FILENAME].decode(): r for r in messy_records}
    assert by_name["cat/photo.jpg"][record_schema.ENCODED] == (messy[0] / "cat/photo.jpg").read_bytes()
    sideways = by_name["cat/sideways.jpg"]["pixels"]  # stored upright: red left, blue right
    np.testing.assert_allclose(sideways[15, 5], RED, atol=12)
    np.testing.assert_allclose(sideways[15, 55], BLUE, atol=12)
    np.testing.assert_allclose(by_name["cat/alpha.png"]["pixels"][8, 4], WHITE, atol=12)
    np.testing.assert_allclose(by_name["cat/animated.gif"]["pixels"][8, 16], RED, atol=12)
    np.testing.assert_allclose(by_name["cat/cmyk.jpg"]["pixels"][8, 16], RED, atol=12)
    np.testing.assert_allclose(by_name["cat/deep-16-bit.png"]["pixels"][8, 16], (156, 156, 156), atol=3)


def test_manifest_accounts_for_every_file(messy, messy_records):
    manifest = manifest_of(messy[0])
    assert manifest["total_images"] == 15
    assert manifest["images_per_class"] == {"cat": 13, "dog": 1, "empty": 0, "vögel": 1}
    assert (manifest["max_edge"], manifest["seed"], manifest["labels_file"]) == (MAX_EDGE, 0, "labels.txt")
    records_per_shard = {}
    for record in messy_records:
        records_per_shard[record["shard"]] = records_per_shard.get(record["shard"], 0) + 1
    for shard in manifest["shards"]:
        assert shard["images"] == records_per_shard.get(shard["file"], 0)
        assert shard["bytes"] == os.path.getsize(messy[0] / shard["file"])
    assert [entry["file"] for entry in manifest["skipped"]] == sorted(SKIPPED)
    for entry in manifest["skipped"]:
        assert SKIPPED[entry["file"]] in entry["reason"]
    assert (manifest["role"], manifest["validation_percentage"], manifest["duplicates_of_training"]) == ("train", None, [])


def test_manifest_holds_each_shards_records_digest_and_each_images_digest(messy, messy_records):
    manifest = manifest_of(messy[0])
    for shard in manifest["shards"]:
        assert shard["records_sha256"] == records_digest(tf.compat.v1.io.tf_record_iterator(str(messy[0] / shard["file"])))
    assert len({shard["records_sha256"] for shard in manifest["shards"]}) == 8
    digests = manifest["image_digests"]
    assert sorted(digests) == sorted(USABLE)
    by_name = {record[record_schema.FILENAME].decode(): record for record in messy_records}
    for name in USABLE:  # the digest of the picture stored (re-encoded ones: before their JPEG encoding)
        stored = image_digest.of(Image.open(io.BytesIO(by_name[name][record_schema.ENCODED])))
        limit = 0 if name in ("cat/photo.jpg", "dog/猫と犬 ünïcode.jpg") else 10  # stored byte for byte, or not
        assert image_digest.differing_bits(digests[name], stored) <= limit


# --- label ids across separately converted sets ---


def test_a_test_set_missing_a_class_gets_the_training_label_ids(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\nvögel\n")
    save(tmp_path / "test/dog/1.jpg", noise((30, 20)), "JPEG")
    code, _, stderr = convert(tmp_path / "test", tmp_path / "test", "--labels_file", tmp_path / "labels.txt",
                              "--num_workers", 1)
    assert code == 0, stderr
    assert [r[record_schema.LABEL] for r in read_records(tmp_path / "test")] == [1]
    assert (tmp_path / "test/labels.txt").read_text() == "cat\ndog\nvögel\n"
    assert manifest_of(tmp_path / "test")["images_per_class"] == {"cat": 0, "dog": 1, "vögel": 0}
    assert "warning" not in stderr  # classes absent from a test set are expected
    assert f"note: no training manifest with image digests beside --labels_file {tmp_path}/labels.txt" in stderr


# --- same seed, same bytes ---


def test_output_is_deterministic_for_a_seed_whatever_the_worker_count(tmp_path):
    for index in range(12):
        save(tmp_path / "data" / ("cat", "dog")[index % 2] / f"{index}.png", noise((80, 40), seed=index), "PNG")
    outputs = {}
    for label, seed, workers in [("a", 7, 1), ("b", 7, 2), ("c", 8, 2)]:
        code, _, stderr = convert(tmp_path / "data", tmp_path / label, "--seed", seed, "--num_workers", workers)
        assert code == 0, stderr
        outputs[label] = [open(path, "rb").read() for path in shard_paths(tmp_path / label)]
    assert outputs["a"] == outputs["b"]
    assert outputs["a"] != outputs["c"]
    assert sorted(b"".join(outputs["a"])) == sorted(b"".join(outputs["c"]))  # same records, other order


def test_a_rerun_replaces_the_earlier_set(tmp_path):
    for index in range(4):
        save(tmp_path / "data/cat" / f"{index}.jpg", noise((30, 20), seed=index), "JPEG")
    assert convert(tmp_path / "data", tmp_path / "out", "--num_workers", 1)[0] == 0
    assert len(shard_paths(tmp_path / "out")) == 4  # default: one shard a file below 8 files
    assert convert(tmp_path / "data", tmp_path / "out", "--num_workers", 1, "--num_shards", 2)[0] == 0
    assert sorted(os.listdir(tmp_path / "out")) == [
        "labels.txt", "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord", "train-manifest.json"]
    assert len(read_records(tmp_path / "out")) == 4


@pytest.mark.parametrize("num_files, total_bytes, expected", [
    (5, 5 * 10**6, 5),  # a tiny set: one shard a file
    (1000, 1000 * 10**6, 8),  # at least as many shards as the input pipeline interleaves
    (10**6, 10**6 * 200_000, 235),  # a million photos: 384² * 0.25 bytes estimated each, 150 MB a shard
    (10**6, 10**6 * 5_000, 32),  # a million thumbnails, stored as they are
])
def test_default_shard_count_follows_the_estimated_output_size(num_files, total_bytes, expected):
    assert convert_dataset.default_num_shards(num_files, total_bytes, max_edge=384) == expected


def test_output_goes_through_gfile_to_any_tensorflow_filesystem(tmp_path):
    save(tmp_path / "data/cat/a.png", noise((30, 20)), "PNG")
    output = f"ram://{tmp_path.name}/out"  # TensorFlow's in-memory filesystem, standing in for gs:// and the like
    code, _, stderr = convert(tmp_path / "data", output, "--num_workers", 1)
    assert code == 0, stderr
    assert sorted(tf.io.gfile.listdir(output)) == ["labels.txt", "train-00000-of-00001.tfrecord", "train-manifest.json"]
    assert len(list(tf.compat.v1.io.tf_record_iterator(f"{output}/train-00000-of-00001.tfrecord"))) == 1


# --- mistakes get one line, no traceback ---


def no_class_folders(root):
    write(root / "data/a.jpg", encoded(noise((8, 8)), "JPEG"))


def no_files(root):
    (root / "data/cat").mkdir(parents=True)


def class_not_in_labels(root):
    write(root / "data/horse/a.jpg", encoded(noise((8, 8)), "JPEG"))
    write(root / "labels.txt", b"cat\ndog\n")


def nothing_usable(root):
    write(root / "data/cat/a.jpg", b"not a jpeg")


def class_folder_named(name):
    def make(root):
        write(root / "data/cat/a.jpg", encoded(noise((8, 8)), "JPEG"))
        write(root / "data" / name / "a.jpg", encoded(noise((8, 8)), "JPEG"))
    return make


def labels_file_with(text):
    def make(root):
        write(root / "data/cat/a.jpg", encoded(noise((8, 8)), "JPEG"))
        write(root / "labels.txt", text.encode())
    return make


@pytest.mark.parametrize(
    "make, extra, message",
    [
        (lambda root: None, (), r"--dataset_dir \S+/data does not exist or is not a folder; put each class's images"),
        (lambda root: (root / "data").mkdir(), (), r"--dataset_dir \S+ has no class folders \(it is empty"),
        (no_class_folders, (), r"--dataset_dir \S+ has no class folders"),
        (no_files, (), r"the class folders in --dataset_dir \S+ hold no files"),
        (class_not_in_labels, ("--labels_file", "{root}/labels.txt"),
         r"class folder\(s\) horse of --dataset_dir \S+ are not in --labels_file \S+labels.txt; add them"),
        (nothing_usable, ("--labels_file", "{root}/missing.txt"), r"--labels_file cannot read \S+missing.txt"),
        (nothing_usable, (), r"none of the files below --dataset_dir \S+ is a usable image; reasons in \S+\.json"),
        (class_folder_named("new\nline"), (), r"class folder 'new\\nline' contains a control character \(U\+000A\); "
                                               r"rename it in --dataset_dir \S+ \(folder names are class names\)"),
        (class_folder_named(" "), (), r"class folder ' ' is blank; rename it in --dataset_dir"),
        (labels_file_with("caf\u00e9\ncafe\u0301\n"), ("--labels_file", "{root}/labels.txt"),
         r"--labels_file \S+labels.txt, line 2 'cafe\u0301' is the same name as line 1 'caf\u00e9' after Unicode "
         r"normalization; fix it \(the line number is the label id\)"),
        (labels_file_with("cat\ndog\ncat\n"), ("--labels_file", "{root}/labels.txt"),
         r"--labels_file \S+labels.txt, line 3 'cat' is the same name as line 1 'cat'; fix it"),
        (labels_file_with("cat\n \ndog\n"), ("--labels_file", "{root}/labels.txt"),
         r"--labels_file \S+labels.txt, line 2 ' ' is blank; fix it"),
    ],
    ids=["missing", "empty", "no-class-folders", "no-files", "class-not-in-labels", "missing-labels-file",
         "nothing-usable", "newline-in-folder", "blank-folder", "labels-normalization-duplicate",
         "labels-duplicate", "labels-blank-line"],
)
def test_bad_input_is_a_one_line_error(tmp_path, make, extra, message):
    make(tmp_path)
    extra = [arg.format(root=tmp_path) for arg in extra]
    code, stdout, stderr = convert(tmp_path / "data", tmp_path / "out", "--num_workers", 1, *extra)
    assert code == 1
    assert re.fullmatch(rf"error: {message}.*", stderr.splitlines()[-1])  # after the progress bar, if it got that far
    assert "Traceback" not in stderr


@pytest.mark.parametrize("make", [class_folder_named("new\nline"), class_folder_named("\t"),
                                  labels_file_with("cat\ncat\n")], ids=["newline", "blank", "duplicate-label"])
def test_a_bad_class_name_is_refused_before_anything_is_written(tmp_path, make):
    make(tmp_path)
    extra = ("--labels_file", tmp_path / "labels.txt") if (tmp_path / "labels.txt").exists() else ()
    before = sorted(os.listdir(tmp_path / "data"))
    code, stdout, stderr = convert(tmp_path / "data", tmp_path / "data", "--num_workers", 1, *extra)
    assert code == 1 and stderr.count("\n") == 1 and stderr.startswith("error: ") and stdout == ""
    assert sorted(os.listdir(tmp_path / "data")) == before  # no shard, labels.txt or manifest


def test_class_folders_differing_only_in_case_are_two_classes_with_a_warning(tmp_path):
    write(tmp_path / "data/Cat/a.jpg", encoded(noise((8, 8)), "JPEG"))
    write(tmp_path / "data/cat/b.jpg", encoded(noise((8, 8)), "JPEG"))
    code, _, stderr = convert(tmp_path / "data", tmp_path / "out", "--num_workers", 1)
    assert code == 0, stderr
    assert "warning: class folders 'Cat' and 'cat' differ only in case; they become two classes\n" in stderr
    assert record_schema.read_labels(str(tmp_path / "out/labels.txt")) == ["Cat", "cat"]


@pytest.mark.parametrize("output, message", [
    ("file/out", r"cannot write to --tfrecord_dir \S+file/out: .*; pick a writable folder"),
    ("data/records", r"--tfrecord_dir \S+records is inside --dataset_dir \S+, where its shards would be taken"),
    ("data/cat/records", r"--tfrecord_dir \S+records is inside --dataset_dir"),
])
def test_a_bad_output_folder_is_refused_before_any_work(tmp_path, output, message):
    write(tmp_path / "data/cat/a.jpg", encoded(noise((8, 8)), "JPEG"))
    write(tmp_path / "file", b"")
    code, _, stderr = convert(tmp_path / "data", tmp_path / output)
    assert code == 1
    assert re.fullmatch(rf"error: {message}.*\n", stderr)


# --- one folder split into sets by file name ---


def split(dataset, output, *extra) -> tuple:
    """Run the converter on one folder to split (no --tfrecord_filename) with MAX_EDGE and ``extra``."""
    return run("--dataset_dir", dataset, "--tfrecord_dir", output, "--max_edge", MAX_EDGE, "--num_workers", 2, *extra)


def sets_of_records(directory, names=dataset_split.SETS) -> dict:
    """{file name stored: set} of every record of the sets ``names`` in ``directory``."""
    return {record[record_schema.FILENAME].decode(): name for name in names for record in read_records(directory, name)}


def split_tree(root, classes=("cat", "dog", "fish"), per_class=20, seed=0) -> list:
    """``per_class`` small PNGs in each class folder (one nested, two variants of one photo); their paths."""
    files = []
    for offset, class_name in enumerate(classes):
        for index in range(per_class):
            files.append(f"{class_name}/{'nested/' if index == 0 else ''}{seed}_{index}.png")
        files += [f"{class_name}/burst{seed}_nohash_1.png", f"{class_name}/burst{seed}_nohash_2.png"]
    for number, relative in enumerate(files):
        save(root / relative, noise((12, 10), seed=seed * 1000 + number), "PNG")
    return files


@pytest.fixture(scope="module")
def split_once(tmp_path_factory):
    """(folder, files, output, exit code, stdout, stderr) of a tree split 25 % / 15 % / rest."""
    root = tmp_path_factory.mktemp("split")
    files = split_tree(root / "photos")
    outcome = split(root / "photos", root / "records", "--validation_percentage", 25, "--test_percentage", 15)
    return (root / "photos", files, root / "records", *outcome)


def test_a_split_folder_becomes_three_sets_one_labels_file_and_a_manifest_each(split_once):
    _, files, output, code, stdout, stderr = split_once
    assert code == 0, stderr
    assert sorted(os.listdir(output)) == sorted(
        ["labels.txt"] + [f"{name}-manifest.json" for name in dataset_split.SETS]
        + [f"{name}-{index:05d}-of-{count:05d}.tfrecord" for name, count in (("train", 8), ("validation", 8),
                                                                             ("test", 8)) for index in range(count)])
    assert record_schema.read_labels(str(output / "labels.txt")) == ["cat", "dog", "fish"]
    stored = sets_of_records(output)
    expected = {relative: dataset_split.set_of(relative.split("/", 1)[1], 25, 15) for relative in files}
    assert stored == expected  # every file once, in the set its path inside the class folder hashes to
    assert stored["cat/burst0_nohash_1.png"] == stored["cat/burst0_nohash_2.png"]  # variants stay together
    for name in dataset_split.SETS:
        manifest = manifest_of(output, name)
        assert (manifest["role"], manifest["validation_percentage"], manifest["test_percentage"]) == (name, 25, 15)
        by_class = {class_name: sum(1 for relative, set_name in expected.items()
                                    if set_name == name and relative.startswith(class_name + "/"))
                    for class_name in ("cat", "dog", "fish")}
        assert manifest["images_per_class"] == by_class and manifest["total_images"] == sum(by_class.values())
    counts = {name: manifest_of(output, name)["total_images"] for name in dataset_split.SETS}
    assert counts == {"train": 36, "validation": 21, "test": 9}  # of 66: 55 / 32 / 14 %, a hash, not a quota
    table = stdout.splitlines()
    assert table[0].split() == ["class", "train", "validation", "test"]
    assert table[-2].split() == ["total", "36", "21", "9"]
    assert re.fullmatch(r"images: 66, skipped: 0, shards: 24, .*", table[-1])


def test_the_split_stays_when_files_are_added_and_on_another_run(split_once, tmp_path):
    photos, files, output = split_once[:3]
    added = split_tree(tmp_path / "more", classes=("cat", "fish"), per_class=5, seed=1)
    shutil.copytree(photos, tmp_path / "photos")
    shutil.copytree(tmp_path / "more", tmp_path / "photos", dirs_exist_ok=True)
    code, _, stderr = split(tmp_path / "photos", tmp_path / "records", "--validation_percentage", 25,
                            "--test_percentage", 15, "--num_workers", 1)
    assert code == 0, stderr
    before, after = sets_of_records(output), sets_of_records(tmp_path / "records")
    assert sorted(after) == sorted(files + added)
    assert {relative: after[relative] for relative in files} == before  # no file moved
    for name in dataset_split.SETS:  # and the records of the same files are the same bytes
        assert manifest_of(output, name)["image_digests"].items() <= manifest_of(tmp_path / "records", name)[
            "image_digests"].items()


def test_a_class_with_no_image_in_an_evaluation_set_is_named_in_a_warning(tmp_path):
    names = [f"{index}.png" for index in range(40)]
    staying = [name for name in names if dataset_split.set_of(name, 10, 0) == "train"][:3]
    for relative in [f"big/{name}" for name in names] + [f"small/{name}" for name in staying]:
        save(tmp_path / "data" / relative, noise((12, 10), seed=len(relative)), "PNG")
    code, _, stderr = split(tmp_path / "data", tmp_path / "out", "--validation_percentage", 10)
    assert code == 0, stderr
    assert ("warning: no image of class(es) small in the validation set (too few images for 10 %, or all left out "
            "as duplicates); it measures nothing of them\n") in stderr
    assert manifest_of(tmp_path / "out", "validation")["images_per_class"]["small"] == 0
    assert not list((tmp_path / "out").glob("test-*"))  # a set of 0 % is not written


def test_a_set_of_0_percent_leaves_no_earlier_set_of_its_name(tmp_path):
    split_tree(tmp_path / "data", per_class=6)
    assert split(tmp_path / "data", tmp_path / "out", "--validation_percentage", 20, "--test_percentage", 30)[0] == 0
    assert manifest_of(tmp_path / "out", "test")["total_images"] > 0
    assert split(tmp_path / "data", tmp_path / "out", "--test_percentage", 30)[0] == 0
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "out") if name.endswith(".json")) == [
        "test", "train"]
    assert not list((tmp_path / "out").glob("validation*"))
    assert manifest_of(tmp_path / "out", "test")["validation_percentage"] == 0


@pytest.mark.parametrize("extra, message", [
    (("--tfrecord_filename", "train", "--max_edge", "0"), r"argument --max_edge: must be at least 1, got 0"),
    (("--validation_percentage", "-1"), r"argument --validation_percentage: must be in \[0, 100\), got -1"),
    (("--validation_percentage", "100"), r"argument --validation_percentage: must be in \[0, 100\), got 100"),
    (("--test_percentage", "nan"), r"argument --test_percentage: must be in \[0, 100\), got nan"),
    (("--test_percentage", "ten"), r"argument --test_percentage: must be a number, got 'ten'"),
    (("--validation_percentage", "60", "--test_percentage", "40"),
     r"--validation_percentage 60 and --test_percentage 40 sum to 100 or more, leaving no training images; lower them"),
    (("--validation_percentage", "20", "--tfrecord_filename", "train"),
     r"argument --tfrecord_filename: a split folder's sets are named train, validation and test; leave it out.*"),
    ((), r"the following arguments are required: --tfrecord_filename \(or split the folder with --validation_percentage\)"),
    (("--tfrecord_filename", "train", "--drop_duplicates"),
     r"argument --drop_duplicates: there is no evaluation set to drop images from; split the folder .*"),
    (("--validation_percentage", "0", "--drop_duplicates"), r"argument --drop_duplicates: there is no evaluation set.*"),
], ids=["max-edge", "negative", "100", "nan", "not-a-number", "sum-100", "name-and-split", "neither", "drop-no-eval",
        "drop-0-percent"])
def test_command_line_mistakes_are_one_line_usage_errors_before_anything_runs(tmp_path, extra, message):
    write(tmp_path / "data/cat/a.jpg", encoded(noise((8, 8)), "JPEG"))
    code, stdout, stderr = run("--dataset_dir", tmp_path / "data", "--tfrecord_dir", tmp_path / "out",
                               "--max_edge", MAX_EDGE, *extra)
    assert (code, stdout) == (2, "")
    assert re.fullmatch(rf"error: {message} \(see convert_dataset.py --help\)\n", stderr)
    assert not (tmp_path / "out").exists()


# --- evaluation images that are training images: real photos, copied ---


TRAINING_PHOTOS = {"colour": ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png"],
                   "grey": ["camera.png", "moon.png", "coins.png", "grass.png", "brick.png"]}
COPIED = ["colour/astronaut.png", "colour/chelsea.png", "colour/coffee.png", "grey/camera.png", "grey/moon.png"]


def jpeg_at_quality_60(relative) -> Image.Image:
    """The scikit-image photo named by ``relative`` ("class/name"), re-encoded at JPEG quality 60 and read back."""
    return Image.open(io.BytesIO(encoded(photo(relative.split("/")[1]), "JPEG", quality=60)))


def stem(relative) -> str:
    return relative.split("/")[1].split(".")[0]


@pytest.fixture(scope="module")
def photos_converted(tmp_path_factory):
    """A training folder of 10 real photos converted; a test folder of 5 of them re-encoded at JPEG quality 60 and 3
    other pictures (the other photo of a stereo pair, a mirrored training photo, a new photo)."""
    root = tmp_path_factory.mktemp("photos")
    for class_name, names in TRAINING_PHOTOS.items():
        for name in names:
            save(root / "train" / class_name / name, photo(name), "PNG")
    for relative in COPIED:
        save(root / "test" / relative.split("/")[0] / f"{stem(relative)}_copy.jpg", jpeg_at_quality_60(relative), "JPEG")
    save(root / "test/colour/motorcycle_right.png", photo("motorcycle_right.png"), "PNG")
    save(root / "test/colour/astronaut_mirrored.jpg", photo("astronaut.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT),
         "JPEG")
    save(root / "test/grey/gravel.png", photo("gravel.png"), "PNG")
    code, _, stderr = run("--dataset_dir", root / "train", "--tfrecord_filename", "train", "--tfrecord_dir",
                          root / "records/train", "--max_edge", 128, "--num_workers", 2)
    assert code == 0, stderr
    return root


def convert_test_photos(root, output, *extra) -> tuple:
    """Convert the test folder as a second run tied to the training run by its labels file."""
    return run("--dataset_dir", root / "test", "--tfrecord_filename", "test", "--tfrecord_dir", output,
               "--max_edge", 128, "--num_workers", 2, "--labels_file", root / "records/train/labels.txt", *extra)


def test_five_training_photos_reencoded_in_the_test_set_are_five_duplicates(photos_converted, tmp_path):
    root = photos_converted
    code, _, stderr = convert_test_photos(root, tmp_path)
    assert code == 0, stderr
    assert (f"warning: images also in the training set (the same picture, re-encoded, resized or not): 5 (test 5); "
            f"listed under duplicates_of_training in {tmp_path}/test-manifest.json; --drop_duplicates leaves them out"
            "\n") in stderr
    manifest = manifest_of(tmp_path, "test")
    assert (manifest["role"], manifest["total_images"], manifest["duplicates_dropped"]) == ("evaluation", 8, False)
    duplicates = manifest["duplicates_of_training"]
    assert [(entry["file"], entry["training_file"]) for entry in duplicates] == sorted(
        (f"{relative.split('/')[0]}/{stem(relative)}_copy.jpg", f"{root}/train/{relative}") for relative in COPIED)
    assert all(0 <= entry["differing_bits"] <= image_digest.MAX_DIFFERING_BITS // 2 for entry in duplicates)
    assert len(read_records(tmp_path, "test")) == 8  # reported, still there


def test_drop_duplicates_leaves_them_out_of_the_test_set(photos_converted, tmp_path):
    code, stdout, stderr = convert_test_photos(photos_converted, tmp_path, "--drop_duplicates")
    assert code == 0, stderr
    assert (f"duplicates of training images left out: 5 (test 5); listed under duplicates_of_training in "
            f"{tmp_path}/test-manifest.json\n") in stderr
    assert "warning" not in stderr
    manifest = manifest_of(tmp_path, "test")
    assert (manifest["total_images"], manifest["duplicates_dropped"], len(manifest["duplicates_of_training"])) == (
        3, True, 5)
    stored = sorted(record[record_schema.FILENAME].decode() for record in read_records(tmp_path, "test"))
    assert stored == ["colour/astronaut_mirrored.jpg", "colour/motorcycle_right.png", "grey/gravel.png"]
    assert stdout.startswith("images: 3, skipped: 0,")


def test_a_split_finds_training_photos_copied_into_its_evaluation_sets(tmp_path):
    def named_into(wanted, prefix):  # the first name of this form the split puts into ``wanted``
        return next(f"{prefix}{index}.jpg" for index in range(1000)
                    if dataset_split.set_of(f"{prefix}{index}.jpg", 30, 20) == wanted)

    originals = {}
    for class_name, names in TRAINING_PHOTOS.items():
        for name in names:
            originals[name] = f"{class_name}/{named_into('train', stem('/' + name) + '_')}"
            save(tmp_path / "data" / originals[name], photo(name), "JPEG", quality=95)
    copies = {"validation": ["chelsea.png", "moon.png"], "test": ["rocket.jpg"]}
    for wanted, names in copies.items():
        for name in names:
            relative = f"{originals[name].split('/')[0]}/{named_into(wanted, 'copy_of_' + stem('/' + name) + '_')}"
            save(tmp_path / "data" / relative, photo(name).resize((200, 150)), "PNG")  # resized, and a PNG
    code, _, stderr = split(tmp_path / "data", tmp_path / "out", "--validation_percentage", 30, "--test_percentage", 20,
                            "--drop_duplicates")
    assert code == 0, stderr
    assert "duplicates of training images left out: 3 (validation 2, test 1); listed under duplicates_of_training in " in stderr
    for wanted, names in copies.items():
        manifest = manifest_of(tmp_path / "out", wanted)
        assert sorted(entry["training_file"] for entry in manifest["duplicates_of_training"]) == sorted(
            originals[name] for name in names)
        assert manifest["total_images"] == 0 and not read_records(tmp_path / "out", wanted)
    assert manifest_of(tmp_path / "out", "train")["total_images"] == 10
    assert "note:" not in stderr


def test_a_training_set_converted_again_in_place_is_not_its_own_duplicate(photos_converted, tmp_path):
    shutil.copytree(photos_converted / "records/train", tmp_path / "train")
    code, _, stderr = run("--dataset_dir", photos_converted / "train", "--tfrecord_filename", "train",
                          "--tfrecord_dir", tmp_path / "train", "--max_edge", 128, "--num_workers", 2,
                          "--labels_file", tmp_path / "train/labels.txt")
    assert code == 0, stderr
    assert "images also in the training set" not in stderr and "note: no training manifest" in stderr
    assert manifest_of(tmp_path / "train")["duplicates_of_training"] == []


@pytest.mark.parametrize("damage, error", [
    (lambda manifest: "{", "JSONDecodeError"),
    (lambda manifest: json.dumps({**manifest, "image_digests": {"colour/chelsea.png": "not hex"}}), "ValueError"),
    (lambda manifest: json.dumps({key: value for key, value in manifest.items() if key != "image_digests"}), "KeyError"),
], ids=["not-json", "bad-digest", "no-digests"])
def test_a_damaged_training_manifest_beside_the_labels_file_is_a_one_line_error(photos_converted, tmp_path, damage,
                                                                                  error):
    shutil.copytree(photos_converted / "records/train", tmp_path / "train")
    manifest = tmp_path / "train/train-manifest.json"
    manifest.write_text(damage(json.loads(manifest.read_text())))
    code, stdout, stderr = convert_test_photos(photos_converted, tmp_path / "test", "--labels_file",
                                               tmp_path / "train/labels.txt")
    assert (code, stdout) == (1, "")
    assert re.fullmatch(rf"error: cannot read the manifests beside --labels_file {tmp_path}/train/labels.txt: "
                        rf"{error}: .*; convert the training set again\n", stderr)
    assert not (tmp_path / "test").exists() or not list((tmp_path / "test").glob("*.tfrecord"))


# --- a killed run leaves nothing that passes for a finished shard ---


@pytest.mark.slow
def test_a_killed_run_leaves_only_complete_shards_and_a_rerun_finishes_cleanly(tmp_path):
    image = tmp_path / "source.png"
    save(image, noise((256, 256)), "PNG")  # ~3 ms to convert: 400 take over a second with one worker
    for index in range(400):
        (tmp_path / "data" / ("cat", "dog")[index % 2]).mkdir(parents=True, exist_ok=True)
        os.link(image, tmp_path / "data" / ("cat", "dog")[index % 2] / f"{index}.png")
    command = [sys.executable, os.path.join(ROOT, "convert_dataset.py"), "--dataset_dir", tmp_path / "data",
               "--tfrecord_filename", "train", "--tfrecord_dir", tmp_path / "out", "--max_edge", 200,
               "--num_shards", 20]

    process = subprocess.Popen([str(arg) for arg in command + ["--num_workers", 1]], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline and not (
            (tmp_path / "out").is_dir() and shard_paths(tmp_path / "out")):
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    finished = shard_paths(tmp_path / "out")
    assert 1 <= len(finished) < 20 and not (tmp_path / "out/train-manifest.json").exists()  # really mid-run
    unfinished = set(os.listdir(tmp_path / "out")) - {os.path.basename(path) for path in finished}
    assert all(name.startswith(".train-") for name in unfinished)  # hidden: no glob takes it for a shard
    for path in finished:  # each one whole: every record intact and decodable
        assert len(list(tf.compat.v1.io.tf_record_iterator(path))) == 20
    assert len(read_records(tmp_path / "out")) == 20 * len(finished)

    rerun = subprocess.run([str(arg) for arg in command + ["--num_workers", 2]], cwd=ROOT, capture_output=True,
                           text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        ["labels.txt", "train-manifest.json", *[f"train-{i:05d}-of-00020.tfrecord" for i in range(20)]])
    assert len(read_records(tmp_path / "out")) == 400
