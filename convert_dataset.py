"""Convert a folder of images, one sub-folder per class, into sharded JPEG TFRecords.

One folder, split into train / validation (/ test) sets by a hash of each file's name:

    python convert_dataset.py --dataset_dir dataset/all --tfrecord_dir dataset/records --max_edge 384 \\
        --validation_percentage 20

Or sets split by hand, one run each, the later ones with the first one's labels:

    python convert_dataset.py --dataset_dir dataset/train --tfrecord_filename train \\
        --tfrecord_dir dataset/train --max_edge 384
    python convert_dataset.py --dataset_dir dataset/test --tfrecord_filename test \\
        --tfrecord_dir dataset/test --max_edge 384 --labels_file dataset/train/labels.txt

Writes into --tfrecord_dir, for each set, the shards ``<set>-00000-of-0000N.tfrecord`` (record
layout: project/record_schema.py) and ``<set>-manifest.json``, and one ``labels.txt``. The
manifests are written last: a folder without them holds an unfinished conversion. An image of
an evaluation set (validation, test, or a set converted with --labels_file) that is also in the
training set, re-encoded, resized or not, is listed in its manifest and counted on stderr.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import itertools
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

from library import atomic_file, dataset_split, image_digest
from library import manifest as manifests
from library.command_line import OneLineParser, percentage, positive
from library.image_files import UnusableImage, check_class_names, list_class_folders, read_for_dataset, resolved_path
from library.tensorflow_env import import_tensorflow
from library.tfrecord_writer import MAX_SHARDS, ShardedTFRecordWriter, remove_set
from project import record_schema

TARGET_SHARD_BYTES = 150 * 2**20  # large enough to stream well, small enough to spread over readers
# At least as many shards as an input pipeline typically reads at once (this project's cycle_length is 8).
MIN_SHARDS = 8
JPEG_BYTES_PER_PIXEL = 0.25  # a generous size estimate of a stored photo, for the default shard count
IMAGES_PER_TASK = 8  # spreads the process pool's cost per task (~0.15 ms of this process's time) over 8 images
TASKS_IN_FLIGHT_PER_WORKER = 3  # keeps every worker busy without holding the dataset in memory
SEARCHED_AT_ONCE = 64  # evaluation images searched for among the training digests in one matrix product
TRAIN = dataset_split.TRAIN
EVALUATION = "evaluation"  # the role of a set converted on its own with another set's --labels_file


class ConversionError(Exception):
    """A problem with the user's input or output; the message is the whole one-line explanation."""


@dataclasses.dataclass
class _ShardSet:
    """One set of shards to write."""

    name: str
    role: str  # TRAIN, dataset_split.VALIDATION or TEST, or EVALUATION: whether it is searched for training images
    files: list  # "class/.../name" paths
    skipped: list  # (path, reason) of what the folder listing left out


@dataclasses.dataclass
class _Job:
    """What every set's conversion shares."""

    args: argparse.Namespace
    labels: list
    pool: concurrent.futures.Executor
    progress: tqdm
    skipped: int = 0  # so far, for the progress bar


@dataclasses.dataclass
class _Tally:
    """What the conversion of a set wrote and left out, for its manifest and the summary."""

    images_per_class: dict
    skipped: list
    digests: dict  # file -> image_digest of every image written
    duplicates: list  # evaluation images near a training image, each a dict for the manifest


def _parse_args(argv):
    """The command line, checked."""
    parser = OneLineParser(prog="convert_dataset.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset_dir", required=True, help="folder with one sub-folder of images per class")
    parser.add_argument("--tfrecord_filename", help="name of the one set of an unsplit folder, e.g. train")
    parser.add_argument("--tfrecord_dir", required=True, help="output folder; may be --dataset_dir")
    parser.add_argument("--max_edge", type=positive(int), required=True, help="longer image edge in pixels")
    parser.add_argument("--validation_percentage", type=percentage,
                        help="split the folder by a hash of each file's name: this share of each class into the set "
                             "'validation', the rest into 'train'")
    parser.add_argument("--test_percentage", type=percentage, help="split the folder: this share into the set 'test'")
    parser.add_argument("--labels_file", help="reuse this labels.txt (the training set's) for the label ids")
    parser.add_argument("--drop_duplicates", action="store_true",
                        help="leave out of the evaluation sets the images also in the training set")
    parser.add_argument("--num_shards", type=positive(int),
                        help=f"of each set; default: ~150 MB a shard, at least {MIN_SHARDS}")
    parser.add_argument("--num_workers", type=positive(int), default=os.cpu_count(), help="default: CPU count")
    parser.add_argument("--seed", type=int, default=0, help="shuffles the record order; same seed, same shards")
    args = parser.parse_args(argv)
    if args.num_shards and args.num_shards > MAX_SHARDS:
        parser.error(f"argument --num_shards: at most {MAX_SHARDS}, got {args.num_shards}")
    _check_split(parser, args)
    name = args.tfrecord_filename
    if name is not None and (not name or "/" in name or name.startswith(".")):
        parser.error(f"argument --tfrecord_filename: a plain, visible file name is needed, got {name!r}")
    if args.drop_duplicates and not (args.labels_file or args.validation_percentage or args.test_percentage):
        parser.error("argument --drop_duplicates: there is no evaluation set to drop images from; split the folder "
                     "(--validation_percentage, --test_percentage) or name the training set's --labels_file")
    return args


def _check_split(parser, args) -> None:
    """Either a split (percentages, the absent one 0) or one named set, and the split keeps training images."""
    split = args.validation_percentage is not None or args.test_percentage is not None
    if split and args.tfrecord_filename is not None:
        parser.error("argument --tfrecord_filename: a split folder's sets are named train, validation and test; "
                     "leave it out, or leave out the percentages to convert the folder as one set")
    if not split and args.tfrecord_filename is None:
        parser.error("the following arguments are required: --tfrecord_filename (or split the folder with "
                     "--validation_percentage)")
    if split:
        args.validation_percentage = args.validation_percentage or 0.0
        args.test_percentage = args.test_percentage or 0.0
        if args.validation_percentage + args.test_percentage >= 100:
            parser.error(f"--validation_percentage {args.validation_percentage:g} and --test_percentage "
                         f"{args.test_percentage:g} sum to 100 or more, leaving no training images; lower them")


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
    """Convert ``args.dataset_dir`` into ``args.tfrecord_dir``; returns the summary."""
    tf = import_tensorflow()
    started = time.monotonic()
    _check_output_dir(args.tfrecord_dir, args.dataset_dir)
    found = _find_class_folders(args.dataset_dir)
    labels = _label_names(found.classes, args.labels_file, args.dataset_dir)
    sets = _planned_sets(args, found)
    training = _earlier_training_images(args, sets)
    try:
        _remove_earlier_output(args, sets)
        written = _write_sets(args, sets, labels, training, found.total_bytes / len(found.files))
        labels_path = os.path.join(args.tfrecord_dir, record_schema.LABELS_FILENAME)
        atomic_file.write_text(labels_path, "\n".join(labels) + "\n")
        for manifest in written:
            manifests.write(manifests.path_of(args.tfrecord_dir, manifest["tfrecord_filename"]), manifest)
    except tf.errors.OpError as error:
        raise ConversionError(
            f"cannot write to --tfrecord_dir {args.tfrecord_dir}: {error}; "
            "check its permissions and free space"
        ) from None
    _report_problems(written, found.classes, args)
    return _summary(written, time.monotonic() - started, args.tfrecord_dir)


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


def _planned_sets(args, found) -> list:
    """The sets to write, the training set first: the folder as one named set, or its split by file name."""
    if args.tfrecord_filename is not None:
        role = EVALUATION if args.labels_file else TRAIN
        return [_ShardSet(args.tfrecord_filename, role, found.files, found.skipped)]
    sets = {name: _ShardSet(name, name, [], []) for name in dataset_split.SETS}

    def set_of(relative):
        path_in_class = relative.split("/", 1)[-1]
        return sets[dataset_split.set_of(path_in_class, args.validation_percentage, args.test_percentage)]

    for relative in found.files:
        set_of(relative).files.append(relative)
    for relative, reason in found.skipped:
        set_of(relative).skipped.append((relative, reason))
    shares = {dataset_split.VALIDATION: args.validation_percentage, dataset_split.TEST: args.test_percentage}
    return [shard_set for name, shard_set in sets.items() if name == TRAIN or shares[name]]


def _earlier_training_images(args, sets: list) -> image_digest.Index:
    """The digests of the training set(s) whose manifests are beside --labels_file, unless this run replaces them:
    the images an evaluation set converted in a run of its own must not share with training."""
    found = image_digest.Index()
    if not args.labels_file:
        return found
    folder = os.path.dirname(args.labels_file) or "."
    replaced = {manifests.path_of(resolved_path(args.tfrecord_dir), shard_set.name) for shard_set in sets}
    try:
        for path, manifest in manifests.in_folder(folder):
            if manifest.get("role") == TRAIN and resolved_path(path) not in replaced:
                root = manifest["dataset_dir"]
                found.add([(os.path.join(root, file), digest) for file, digest in manifest["image_digests"].items()])
    except (ValueError, KeyError, AttributeError, import_tensorflow().errors.OpError) as error:
        raise ConversionError(f"cannot read the manifests beside --labels_file {args.labels_file}: "
                              f"{type(error).__name__}: {error}; convert the training set again") from None
    if not found.names and sets[0].role == EVALUATION:
        print(f"note: no training manifest with image digests beside --labels_file {args.labels_file} (convert the "
              "training set with this version to write one); images shared with it are not looked for",
              file=sys.stderr)
    return found


def _remove_earlier_output(args, sets: list) -> None:
    """Remove the manifests of the sets about to be rewritten (each marks a finished set, which the folder is no
    longer), and all of the split's sets of 0 %, which an earlier split may have filled with other images."""
    gfile = import_tensorflow().io.gfile
    written = [shard_set.name for shard_set in sets]
    for name in dataset_split.SETS if args.tfrecord_filename is None else written:
        manifest_path = manifests.path_of(args.tfrecord_dir, name)
        if gfile.exists(manifest_path):
            gfile.remove(manifest_path)
        if name not in written:
            remove_set(args.tfrecord_dir, name)


def default_num_shards(num_files: int, total_bytes: int, max_edge: int) -> int:
    """Shards of about TARGET_SHARD_BYTES of estimated output, at least MIN_SHARDS, at most one a file."""
    estimated_bytes = min(total_bytes, num_files * max_edge**2 * JPEG_BYTES_PER_PIXEL)
    return max(1, min(num_files, max(MIN_SHARDS, math.ceil(estimated_bytes / TARGET_SHARD_BYTES))))


def _write_sets(args, sets: list, labels: list, training: image_digest.Index, bytes_per_file: float) -> list:
    """Write every set through one worker pool; the manifests. The training set comes first, so its images'
    digests are in ``training`` (with those of an earlier run) when the evaluation sets are searched."""
    written = []
    total = sum(len(shard_set.files) for shard_set in sets)
    with _worker_pool(args.num_workers) as pool, tqdm(total=total, unit="img", desc="converting") as progress:
        job = _Job(args, labels, pool, progress)
        for shard_set in sets:
            searched = image_digest.Index() if shard_set.role == TRAIN else training
            files = len(shard_set.files)
            num_shards = args.num_shards or default_num_shards(files, files * bytes_per_file, args.max_edge)
            with ShardedTFRecordWriter(args.tfrecord_dir, shard_set.name, num_shards) as writer:
                tally = _write_records(job, shard_set, writer, searched)
            if shard_set.role == TRAIN:
                training.add(sorted(tally.digests.items()))
            written.append(_manifest(job.args, shard_set, tally, writer))
    return written


def _write_records(job: _Job, shard_set: _ShardSet, writer: ShardedTFRecordWriter,
                   training: image_digest.Index) -> _Tally:
    """Convert the set's files in worker processes and write them, in seeded shuffled order, to the shards;
    an image near one in ``training`` is a duplicate (left out with --drop_duplicates)."""
    order = sorted(shard_set.files)
    random.Random(job.args.seed).shuffle(order)
    label_ids = {name: label for label, name in enumerate(job.labels)}
    skipped = [{"file": path, "reason": reason} for path, reason in shard_set.skipped]
    tally = _Tally(images_per_class=dict.fromkeys(job.labels, 0), skipped=skipped, digests={}, duplicates=[])
    for position, (relative, outcome, match) in enumerate(_searched(_convert_in_order(job, order), training)):
        job.progress.update()
        if isinstance(outcome, UnusableImage):
            tally.skipped.append({"file": relative, "reason": str(outcome)})
            job.skipped += 1
            job.progress.set_postfix(skipped=job.skipped, refresh=False)
            continue
        if match is not None:
            tally.duplicates.append({"file": relative, "training_file": match[0], "differing_bits": match[1]})
            if job.args.drop_duplicates:
                continue
        class_name = relative.split("/", 1)[0]
        record = record_schema.make_example(record_schema.SourceImage(
            jpeg=outcome.jpeg, height=outcome.height, width=outcome.width, label=label_ids[class_name],
            class_name=class_name, filename=relative))
        writer.write(position * len(writer.paths) // len(order), record)
        tally.images_per_class[class_name] += 1
        tally.digests[relative] = outcome.digest
    return tally


def _searched(converted, training: image_digest.Index):
    """(file, outcome, (training file, differing bits) or None) for each of ``converted``'s (file, outcome): the
    training image nearest each usable image, searched for SEARCHED_AT_ONCE images at a time."""
    while chunk := list(itertools.islice(converted, SEARCHED_AT_ONCE)):
        usable = [outcome.digest for _, outcome in chunk if not isinstance(outcome, UnusableImage)]
        matches = iter(training.nearest(usable))
        for relative, outcome in chunk:
            yield relative, outcome, None if isinstance(outcome, UnusableImage) else next(matches)


def _worker_pool(num_workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Processes that decode and encode images; unlike multiprocessing.Pool it reports a worker that died."""
    return concurrent.futures.ProcessPoolExecutor(
        num_workers,
        mp_context=multiprocessing.get_context("spawn"),  # this process runs TensorFlow's threads: no fork
        initializer=_prepare_worker,
        initargs=(Image.MAX_IMAGE_PIXELS,),
    )


def _convert_in_order(job: _Job, files: list):
    """(file, DatasetImage or UnusableImage) in ``files`` order, streaming: only a few tasks a worker are
    submitted ahead of the caller."""
    pending = collections.deque()
    for start in range(0, len(files), IMAGES_PER_TASK):
        batch = files[start : start + IMAGES_PER_TASK]
        paths = [os.path.join(job.args.dataset_dir, relative) for relative in batch]
        pending.append((batch, job.pool.submit(_convert_batch, paths, job.args.max_edge)))
        if len(pending) >= job.args.num_workers * TASKS_IN_FLIGHT_PER_WORKER:
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
    """In a worker: each file's DatasetImage, or the UnusableImage saying why not."""
    outcomes = []
    for path in paths:
        try:
            outcomes.append(read_for_dataset(path, max_edge))
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


def _manifest(args, shard_set: _ShardSet, tally: _Tally, writer: ShardedTFRecordWriter) -> dict:
    """The JSON-ready account of one set."""
    return {
        "dataset_dir": args.dataset_dir,
        "tfrecord_filename": shard_set.name,
        "role": shard_set.role,
        "validation_percentage": args.validation_percentage,
        "test_percentage": args.test_percentage,
        "max_edge": args.max_edge,
        "seed": args.seed,
        "total_images": sum(tally.images_per_class.values()),
        "images_per_class": tally.images_per_class,
        "labels_file": record_schema.LABELS_FILENAME,
        "shards": [
            {"file": os.path.basename(path), "images": images, "bytes": size, "records_sha256": digest}
            for path, images, size, digest in zip(writer.paths, writer.records, writer.sizes, writer.digests)
        ],
        "skipped": sorted(tally.skipped, key=lambda entry: entry["file"]),
        "duplicates_of_training": sorted(tally.duplicates, key=lambda entry: entry["file"]),
        "duplicates_dropped": bool(args.drop_duplicates and tally.duplicates),
        "image_digest": f"difference hash, {image_digest.DIGEST_BITS} bits; a duplicate differs in at most "
                        f"{image_digest.MAX_DIFFERING_BITS}",
        "image_digests": dict(sorted(tally.digests.items())),
    }


def _report_problems(written: list, class_folders: list, args) -> None:
    """Warn on stderr about skipped files, imageless class folders, classes missing from an evaluation set and
    duplicates; fail if nothing was usable."""
    where = {manifest["tfrecord_filename"]: manifests.path_of(args.tfrecord_dir, manifest["tfrecord_filename"])
             for manifest in written}
    if not sum(manifest["total_images"] for manifest in written) and not any(
            manifest["duplicates_of_training"] for manifest in written):
        raise ConversionError(f"none of the files below --dataset_dir {args.dataset_dir} is a usable image; "
                              f"reasons in {', '.join(where.values())}")
    skipped = {name: len(manifest["skipped"]) for name, manifest in zip(where, written) if manifest["skipped"]}
    if skipped:
        print(f"files skipped (not usable images): {sum(skipped.values())}; each is listed with its reason in "
              f"{', '.join(where[name] for name in skipped)}", file=sys.stderr)
    images = collections.Counter()
    for manifest in written:
        images.update(manifest["images_per_class"])
    for name in class_folders:
        if not images[name]:
            print(f"warning: class folder {name} has no usable images; its label id is kept", file=sys.stderr)
    if args.tfrecord_filename is None:
        _report_missing_classes(written[1:], [name for name in class_folders if images[name]])
    _report_duplicates(written, where, args.drop_duplicates)


def _report_missing_classes(evaluation_sets: list, classes: list) -> None:
    """A warning naming the ``classes`` of which a split's evaluation set got no image."""
    for manifest in evaluation_sets:
        missing = [name for name in classes if not manifest["images_per_class"][name]]
        if missing:
            role = manifest["role"]
            print(f"warning: no image of class(es) {', '.join(missing)} in the {role} set (too few images for "
                  f"{manifest[role + '_percentage']:g} %, or all left out as duplicates); it measures nothing of them",
                  file=sys.stderr)


def _report_duplicates(written: list, where: dict, dropped: bool) -> None:
    """One line on stderr counting the evaluation images also in the training set, by set."""
    counts = {name: len(manifest["duplicates_of_training"]) for name, manifest in zip(where, written)
              if manifest["duplicates_of_training"]}
    if not counts:
        return
    by_set = ", ".join(f"{name} {count}" for name, count in counts.items())
    lists = f"listed under duplicates_of_training in {', '.join(where[name] for name in counts)}"
    if dropped:
        print(f"duplicates of training images left out: {sum(counts.values())} ({by_set}); {lists}", file=sys.stderr)
    else:
        print(f"warning: images also in the training set (the same picture, re-encoded, resized or not): "
              f"{sum(counts.values())} ({by_set}); {lists}; --drop_duplicates leaves them out", file=sys.stderr)


def _summary(written: list, seconds: float, tfrecord_dir: str) -> str:
    """The result: a table of images by class and set when the folder was split, then one line of images,
    skipped, size, speed, where."""
    images = sum(manifest["total_images"] for manifest in written)
    shards = [shard for manifest in written for shard in manifest["shards"]]
    megabytes = sum(shard["bytes"] for shard in shards) / 2**20
    skipped = sum(len(manifest["skipped"]) for manifest in written)
    line = (f"images: {images}, skipped: {skipped}, shards: {len(shards)}, size: {megabytes:.1f} MB, "
            f"speed: {images / seconds:.0f} images/s, output: {tfrecord_dir}")
    return line if len(written) == 1 else _table(written) + "\n" + line


def _table(written: list) -> str:
    """Images of each class in each set, and the sets' totals, in aligned columns."""
    names = [manifest["tfrecord_filename"] for manifest in written]
    rows = [["class", *names]]
    rows += [[name, *(str(manifest["images_per_class"][name]) for manifest in written)]
             for name in written[0]["images_per_class"]]
    rows.append(["total", *(str(manifest["total_images"]) for manifest in written)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in
                                                           zip(row[1:], widths[1:])]) for row in rows)


if __name__ == "__main__":
    sys.exit(main())
