"""Convert a folder of images, one sub-folder per class, into sharded JPEG TFRecords.

    python convert_dataset.py --dataset_dir dataset/train --tfrecord_filename train \\
        --tfrecord_dir dataset/train --max_edge 384
    python convert_dataset.py --dataset_dir dataset/test --tfrecord_filename test \\
        --tfrecord_dir dataset/test --max_edge 384 --labels_file dataset/train/labels.txt

Writes into --tfrecord_dir the shards ``<tfrecord_filename>-00000-of-0000N.tfrecord`` (record
layout: project/record_schema.py), ``labels.txt`` and ``<tfrecord_filename>-manifest.json``.
The manifest is written last: a folder without it holds an unfinished conversion.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import math
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import warnings

from PIL import Image
from tqdm import tqdm

from library import atomic_file
from library import manifest as manifests
from library.command_line import OneLineParser, positive
from library.image_files import (UnusableImage, check_class_names, list_class_folders, read_as_baseline_jpeg,
                                 resolved_path)
from library.tensorflow_env import import_tensorflow
from library.tfrecord_writer import MAX_SHARDS, ShardedTFRecordWriter
from project import record_schema

TARGET_SHARD_BYTES = 150 * 2**20  # large enough to stream well, small enough to spread over readers
# At least as many shards as an input pipeline typically reads at once (this project's cycle_length is 8).
MIN_SHARDS = 8
JPEG_BYTES_PER_PIXEL = 0.25  # a generous size estimate of a stored photo, for the default shard count
IMAGES_PER_TASK = 8  # spreads the process pool's cost per task (~0.15 ms of this process's time) over 8 images
TASKS_IN_FLIGHT_PER_WORKER = 3  # keeps every worker busy without holding the dataset in memory


class ConversionError(Exception):
    """A problem with the user's input or output; the message is the whole one-line explanation."""


@dataclasses.dataclass
class _Tally:
    """What the conversion wrote and skipped, for the manifest and the summary."""

    images_per_class: dict
    skipped: list


def _parse_args(argv):
    """The command line, checked."""
    parser = OneLineParser(prog="convert_dataset.py", description=__doc__, exit_status=1,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="folder with one sub-folder of images per class")
    parser.add_argument("--tfrecord_filename", required=True, help="name of the shard set, e.g. train")
    parser.add_argument("--tfrecord_dir", required=True, help="output folder; may be --dataset_dir")
    parser.add_argument("--max_edge", type=positive(int), required=True, help="longer image edge in pixels")
    parser.add_argument("--labels_file", help="reuse this labels.txt (the training set's) for the label ids")
    parser.add_argument("--num_shards", type=positive(int), help=f"default: ~150 MB a shard, at least {MIN_SHARDS}")
    parser.add_argument("--num_workers", type=positive(int), default=os.cpu_count(), help="default: CPU count")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the record order; same seed, same shards")
    args = parser.parse_args(argv)
    if args.num_shards and args.num_shards > MAX_SHARDS:
        parser.error(f"argument --num_shards: at most {MAX_SHARDS}, got {args.num_shards}")
    name = args.tfrecord_filename
    if not name or "/" in name or name.startswith("."):
        parser.error(f"argument --tfrecord_filename: a plain, visible file name is needed, got {name!r}")
    return args


def main(argv=None) -> int:
    """Run the conversion; returns the exit code: 0 once at least one image is written."""
    try:
        print(convert(_parse_args(argv)))
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; finished shards are complete, run again to replace the set", file=sys.stderr)
        return 130
    return 0


def convert(args) -> str:
    """Convert ``args.dataset_dir`` into ``args.tfrecord_dir``; returns the summary line."""
    tf = import_tensorflow()
    started = time.monotonic()
    _check_output_dir(args.tfrecord_dir, args.dataset_dir)
    found = _find_class_folders(args.dataset_dir)
    labels = _label_names(found.classes, args.labels_file, args.dataset_dir)
    num_shards = args.num_shards or default_num_shards(len(found.files), found.total_bytes, args.max_edge)
    manifest_path = manifests.path_of(args.tfrecord_dir, args.tfrecord_filename)
    try:
        if tf.io.gfile.exists(manifest_path):
            tf.io.gfile.remove(manifest_path)  # it marks a finished set, which this folder is no longer
        with ShardedTFRecordWriter(args.tfrecord_dir, args.tfrecord_filename, num_shards) as writer:
            tally = _write_records(args, found.files, labels, writer)
        tally.skipped += [{"file": path, "reason": reason} for path, reason in found.skipped]
        labels_path = os.path.join(args.tfrecord_dir, record_schema.LABELS_FILENAME)
        atomic_file.write_text(labels_path, "\n".join(labels) + "\n")
        manifest = _manifest(args, tally, writer)
        manifests.write(manifest_path, manifest)
    except tf.errors.OpError as error:
        raise ConversionError(
            f"cannot write to --tfrecord_dir {args.tfrecord_dir}: {error}; "
            "check its permissions and free space"
        ) from None
    _report_problems(manifest, found.classes, manifest_path, args.dataset_dir)
    return _summary(manifest, time.monotonic() - started, args.tfrecord_dir)


def _check_output_dir(tfrecord_dir: str, dataset_dir: str) -> None:
    """Fail before the long part if the output folder would become a class or cannot be written."""
    tf = import_tensorflow()
    inside = os.path.relpath(resolved_path(tfrecord_dir), resolved_path(dataset_dir))
    if not inside.startswith("."):  # neither the dataset folder itself, a hidden folder in it, nor outside it
        raise ConversionError(
            f"--tfrecord_dir {tfrecord_dir} is inside --dataset_dir {dataset_dir}, where its shards would be "
            "taken for images of a class; use the dataset folder itself or a folder outside it"
        )
    probe = atomic_file.temporary_name(os.path.join(tfrecord_dir, "write-check"))
    try:
        tf.io.gfile.makedirs(tfrecord_dir)
        with tf.io.gfile.GFile(probe, "wb") as handle:
            handle.write(b"")  # GFile creates the file on the first write
        tf.io.gfile.remove(probe)
    except tf.errors.OpError as error:
        raise ConversionError(
            f"cannot write to --tfrecord_dir {tfrecord_dir}: {error}; pick a writable folder"
        ) from None


def _find_class_folders(dataset_dir: str):
    """The class folders and their files, or an error saying what the folder lacks."""
    tf = import_tensorflow()
    example = os.path.join(dataset_dir, "cat", "1.jpg")
    layout = f"put each class's images in a sub-folder named after it, e.g. {example}"
    if not tf.io.gfile.isdir(dataset_dir):
        raise ConversionError(f"--dataset_dir {dataset_dir} does not exist or is not a folder; {layout}")
    try:
        found = list_class_folders(dataset_dir)
    except (OSError, tf.errors.OpError) as error:
        raise ConversionError(f"cannot list --dataset_dir {dataset_dir}: {error}") from None
    if not found.classes:
        raise ConversionError(
            f"--dataset_dir {dataset_dir} has no class folders (it is empty or holds only files); {layout}"
        )
    if not found.files:
        raise ConversionError(f"the class folders in --dataset_dir {dataset_dir} hold no files; {layout}")
    try:
        case_only = check_class_names(found.classes, lambda index: f"class folder {found.classes[index]!r}")
    except ValueError as error:
        raise ConversionError(f"{error}; rename it in --dataset_dir {dataset_dir} (folder names are class names)") from None
    for first, second in case_only:
        print(f"warning: class folders {first!r} and {second!r} differ only in case; they become two classes",
              file=sys.stderr)
    return found


def _label_names(classes: list, labels_file, dataset_dir: str) -> list:
    """Class names in label-id order: the sorted class folders, or those of ``labels_file``."""
    if labels_file is None:
        return classes
    try:
        labels = record_schema.read_labels(labels_file)
    except ValueError as error:
        raise ConversionError(f"--labels_file {error}; fix it (the line number is the label id)") from None
    unknown = [name for name in classes if name not in labels]
    if unknown:
        raise ConversionError(
            f"class folder(s) {', '.join(unknown)} of --dataset_dir {dataset_dir} are not in "
            f"--labels_file {labels_file}; add them at its end (existing ids stay) or move those folders away"
        )
    return labels


def default_num_shards(num_files: int, total_bytes: int, max_edge: int) -> int:
    """Shards of about TARGET_SHARD_BYTES of estimated output, at least MIN_SHARDS, at most one a file."""
    estimated_bytes = min(total_bytes, num_files * max_edge**2 * JPEG_BYTES_PER_PIXEL)
    return max(1, min(num_files, max(MIN_SHARDS, math.ceil(estimated_bytes / TARGET_SHARD_BYTES))))


def _write_records(args, files: list, labels: list, writer: ShardedTFRecordWriter) -> _Tally:
    """Convert ``files`` in worker processes and write them, in seeded shuffled order, to the shards."""
    order = sorted(files)
    random.Random(args.seed).shuffle(order)
    label_ids = {name: label for label, name in enumerate(labels)}
    tally = _Tally(images_per_class=dict.fromkeys(labels, 0), skipped=[])
    with _worker_pool(args.num_workers) as pool, tqdm(total=len(order), unit="img", desc="converting") as progress:
        converted = _convert_in_order(pool, args.dataset_dir, order, args.max_edge, args.num_workers)
        for position, (relative, outcome) in enumerate(converted):
            if isinstance(outcome, UnusableImage):
                tally.skipped.append({"file": relative, "reason": str(outcome)})
                progress.set_postfix(skipped=len(tally.skipped), refresh=False)
            else:
                class_name = relative.split("/", 1)[0]
                jpeg, height, width = outcome
                record = record_schema.make_example(record_schema.SourceImage(
                    jpeg=jpeg, height=height, width=width, label=label_ids[class_name], class_name=class_name,
                    filename=relative))
                writer.write(position * len(writer.paths) // len(order), record)
                tally.images_per_class[class_name] += 1
            progress.update()
    return tally


def _worker_pool(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Processes that decode and encode images; unlike multiprocessing.Pool it reports a worker that died."""
    return concurrent.futures.ProcessPoolExecutor(
        num_workers,
        mp_context=multiprocessing.get_context("spawn"),  # this process runs TensorFlow's threads: no fork
        initializer=_prepare_worker,
        initargs=(Image.MAX_IMAGE_PIXELS,),
    )


def _convert_in_order(pool, dataset_dir: str, files: list, max_edge: int, num_workers: int):
    """(file, (jpeg, height, width) or UnusableImage) in ``files`` order, streaming: only a few tasks
    a worker are submitted ahead of the caller."""
    pending = collections.deque()
    for start in range(0, len(files), IMAGES_PER_TASK):
        batch = files[start : start + IMAGES_PER_TASK]
        paths = [os.path.join(dataset_dir, relative) for relative in batch]
        pending.append((batch, pool.submit(_convert_batch, paths, max_edge)))
        if len(pending) >= num_workers * TASKS_IN_FLIGHT_PER_WORKER:
            yield from _outcomes(*pending.popleft())
    while pending:
        yield from _outcomes(*pending.popleft())


def _outcomes(batch: list, future: concurrent.futures.Future):
    """(file, outcome) pairs of a finished task; a dead worker is an error naming the task's files."""
    try:
        return zip(batch, future.result())
    except concurrent.futures.process.BrokenProcessPool:
        raise ConversionError(
            f"a worker process died (out of memory, or a crash in an image decoder) on one of {', '.join(batch)}; "
            "try fewer --num_workers, or move that file away"
        ) from None


def _convert_batch(paths: list, max_edge: int) -> list:
    """In a worker: each file's (jpeg, height, width), or the UnusableImage saying why not."""
    outcomes = []
    for path in paths:
        try:
            outcomes.append(read_as_baseline_jpeg(path, max_edge))
        except UnusableImage as reason:
            outcomes.append(reason)
    return outcomes


def _prepare_worker(max_image_pixels) -> None:
    """Worker set-up: the parent's Pillow pixel limit, no warnings over the progress bar, Ctrl-C
    left to the parent, and an exit when the parent dies."""
    Image.MAX_IMAGE_PIXELS = max_image_pixels
    warnings.simplefilter("ignore")  # e.g. DecompressionBombWarning, corrupt EXIF: the outcome is what counts
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, daemon=True).start()


def _exit_with_parent() -> None:
    """Wait for the parent to end, then end this worker, which would otherwise wait for tasks forever."""
    multiprocessing.parent_process().join()
    os._exit(1)


def _manifest(args, tally: _Tally, writer: ShardedTFRecordWriter) -> dict:
    """The JSON-ready account of the run."""
    return {
        "dataset_dir": args.dataset_dir,
        "tfrecord_filename": args.tfrecord_filename,
        "max_edge": args.max_edge,
        "seed": args.seed,
        "total_images": sum(tally.images_per_class.values()),
        "images_per_class": tally.images_per_class,
        "labels_file": record_schema.LABELS_FILENAME,
        "shards": [
            {"file": os.path.basename(path), "images": images, "bytes": size}
            for path, images, size in zip(writer.paths, writer.records, writer.sizes)
        ],
        "skipped": sorted(tally.skipped, key=lambda entry: entry["file"]),
    }


def _report_problems(manifest: dict, class_folders: list, manifest_path: str, dataset_dir: str) -> None:
    """Warn on stderr about skipped files and imageless class folders; fail if nothing was usable."""
    skipped = len(manifest["skipped"])
    if not manifest["total_images"]:
        raise ConversionError(
            f"none of the files below --dataset_dir {dataset_dir} is a usable image; reasons in {manifest_path}"
        )
    if skipped:
        print(f"files skipped (not usable images): {skipped}; each is listed with its reason in {manifest_path}",
              file=sys.stderr)
    for name in class_folders:
        if not manifest["images_per_class"][name]:
            print(f"warning: class folder {name} has no usable images; its label id is kept", file=sys.stderr)


def _summary(manifest: dict, seconds: float, tfrecord_dir: str) -> str:
    """The one-line result: images, skipped, size, speed, where."""
    images = manifest["total_images"]
    megabytes = sum(shard["bytes"] for shard in manifest["shards"]) / 2**20
    return (
        f"images: {images}, skipped: {len(manifest['skipped'])}, shards: {len(manifest['shards'])}, "
        f"size: {megabytes:.1f} MB, speed: {images / seconds:.0f} images/s, output: {tfrecord_dir}"
    )


if __name__ == "__main__":
    sys.exit(main())
