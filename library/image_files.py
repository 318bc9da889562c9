"""Folders of images as training data: list a class-per-folder tree, make any image file a JPEG.

:func:`list_class_folders` walks the tree through ``tf.io.gfile``, so it may live on any
filesystem TensorFlow supports. :func:`read_for_dataset` is meant for worker
processes: it decodes with Pillow alone and reads local files through the OS, so workers
import TensorFlow only for URLs such as ``gs://``, and a stray multi-gigabyte video costs a
header read, not a copy into memory. Local folders are listed through the OS too, which,
unlike ``tf.io.gfile.listdir``, copes with file names that are not UTF-8 and tells a FIFO or a
device, which are never opened, from a regular file.
"""

import contextlib
import dataclasses
import io
import os
import posixpath
import stat
import unicodedata

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from library import image_digest
from library.tensorflow_env import import_tensorflow

JPEG_QUALITY = 90
# EXIF orientations 2-8 flip or rotate the stored pixels for display; 1 (or none) is upright.
_ORIENTATIONS_NEEDING_TRANSPOSE = range(2, 9)
# Entries that are neither files nor folders: reading a FIFO waits for a writer forever, a device may never end.
_SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                  (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))
# Unicode categories that cannot be part of a class name: control characters (a newline would split
# labels.txt) and the line and paragraph separators.
_CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")
NOT_UTF8 = "the name is not valid UTF-8; rename it"


class UnusableImage(Exception):
    """A file that cannot become a training image; the message says why, for the user's report."""


@dataclasses.dataclass
class ClassFolders:
    """What :func:`list_class_folders` found below a dataset folder."""

    classes: list  # names of the visible folders directly below the root, sorted
    files: list  # "class/.../name" paths of the visible files anywhere below them (and in the root if asked), sorted
    total_bytes: int  # size of those files
    skipped: list  # (relative path, reason) of entries left out: unreadable, or a folder seen before


@dataclasses.dataclass
class DatasetImage:
    """What the converter stores of an image: :func:`to_baseline_jpeg`'s result and the picture's digest."""

    jpeg: bytes
    height: int
    width: int
    digest: str  # library.image_digest.of the stored picture


def check_class_names(names: list, describe) -> list:
    """Raise ValueError unless each of ``names`` can be a class name; returns the pairs that differ only in case.

    A class name is a line of labels.txt, the label of the id of its line: a control character
    (a newline would make two lines), a blank name (which would shift every later id on reading
    back) and a repeated name (two ids for one class; compared after Unicode NFC normalization,
    so the two encodings of an accent are one name) are refused with ``describe(index)`` naming
    the culprit. Names that differ only in case are distinct classes, returned for a warning.
    """
    first_with_key, case_only = {}, []
    for index, name in enumerate(names):
        control = next((char for char in name if unicodedata.category(char) in _CONTROL_CATEGORIES), None)
        if control is not None:
            raise ValueError(f"{describe(index)} contains a control character (U+{ord(control):04X})")
        if not name.strip():
            raise ValueError(f"{describe(index)} is blank")
        normalized = unicodedata.normalize("NFC", name)
        first = first_with_key.setdefault(normalized.casefold(), index)
        if first == index:
            continue
        if unicodedata.normalize("NFC", names[first]) == normalized:
            how = "" if names[first] == name else " after Unicode normalization"
            raise ValueError(f"{describe(index)} is the same name as {describe(first)}{how}")
        case_only.append((names[first], name))
    return case_only


def resolved_path(path: str) -> str:
    """A path's identity: symlinks resolved on local disks (object stores have none), URLs kept."""
    return path if "://" in path else os.path.realpath(path)


def is_utf8(path: str) -> bool:
    """Whether ``path`` is valid UTF-8, as TensorFlow takes paths (the OS lists others with surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """``path`` for a message: bytes that are not UTF-8 shown as replacement characters."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def list_class_folders(root: str, root_files: bool = False) -> ClassFolders:
    """The visible files below each visible top-level folder of ``root``, each folder a class.

    Hidden entries (name starting with a dot) are ignored, and so are files directly in
    ``root``, which belong to no class (a converter's own output may sit there), unless
    ``root_files`` asks for them too (a folder of images of unknown classes). Every
    directory is entered once, by its resolved path, so a symlink loop or a second link to
    a folder is reported in ``skipped`` instead of walked again. Raises ``OSError`` or
    ``tf.errors.OpError`` if ``root`` itself cannot be listed.
    """
    tf = import_tensorflow()
    found = ClassFolders(classes=[], files=[], total_bytes=0, skipped=[])
    first_seen_as = {resolved_path(root): "the dataset folder"}
    folders = [""]
    while folders:
        folder = folders.pop()
        try:
            names = _names_in(tf, os.path.join(root, folder))
        except (OSError, tf.errors.OpError) as error:
            if not folder:
                raise
            found.skipped.append((folder, f"cannot list folder: {error}"))
            continue
        entries = _visible_entries(tf, root, folder, names, found.skipped, root_files=root_files)
        for relative, is_folder, size in entries:
            if not is_folder:
                if folder or root_files:
                    found.files.append(relative)
                    found.total_bytes += size
                continue
            identity = resolved_path(os.path.join(root, relative))
            if identity in first_seen_as:
                found.skipped.append((relative, f"links to a folder already included, {first_seen_as[identity]}"))
                continue
            first_seen_as[identity] = relative
            folders.append(relative)
            if not folder:
                found.classes.append(relative)
    found.classes.sort()
    found.files.sort()
    return found


def _names_in(tf, directory: str) -> list:
    """Entry names of ``directory``: local folders are listed by the OS, which keeps names that are
    not UTF-8 (``tf.io.gfile.listdir`` fails on the first one); object stores by ``tf.io.gfile``."""
    return tf.io.gfile.listdir(directory) if "://" in directory else os.listdir(directory)


def _visible_entries(tf, root, folder, names, skipped, *, root_files=False):
    """(relative path, is a folder, size) of the non-hidden ``names``, sorted; failures go to ``skipped``,
    and so do FIFOs, sockets and devices below a class folder, or in the root with ``root_files`` (reading
    one could block forever)."""
    for name in sorted(name.rstrip("/") for name in names):  # object stores end folder names with "/"
        if name.startswith("."):
            continue
        relative = posixpath.join(folder, name)
        if not is_utf8(relative):  # paths are stored, and handed to TensorFlow, as UTF-8
            skipped.append((printable(relative), NOT_UTF8))
            continue
        try:
            yield (relative, *_folder_or_file_size(tf, os.path.join(root, relative)))
        except UnusableImage as reason:
            if folder or root_files:  # else a file directly in the dataset folder: of no class, ignored anyway
                skipped.append((relative, str(reason)))
        except OSError as error:  # a broken symlink, a permission problem
            skipped.append((relative, f"cannot read: {error.filename}: {error.strerror}"))
        except tf.errors.OpError as error:
            skipped.append((relative, f"cannot read: {error}"))


def _folder_or_file_size(tf, path: str) -> tuple:
    """(True, 0) for a folder, (False, size) for a regular file, symlinks followed; UnusableImage for
    anything else. Local paths are asked of the OS, which tells a FIFO from a file."""
    if "://" in path:
        info = tf.io.gfile.stat(path)
        return info.is_directory, info.length
    mode, size = _stat_regular(path, allow_folder=True)
    return stat.S_ISDIR(mode), size


def _stat_regular(path: str, allow_folder: bool = False) -> tuple:
    """(st_mode, st_size) of the local ``path``; UnusableImage unless it is a regular file (or an allowed folder)."""
    info = os.stat(path)
    if stat.S_ISREG(info.st_mode) or (allow_folder and stat.S_ISDIR(info.st_mode)):
        return info.st_mode, info.st_size
    kind = next((name for is_kind, name in _SPECIAL_FILES if is_kind(info.st_mode)), "a special file")
    raise UnusableImage(f"{kind}, not a regular file")


def open_file(path: str):
    """A binary file object for ``path``: the OS's for local paths, so worker processes need no
    TensorFlow, and only for regular files (UnusableImage otherwise: opening a FIFO waits forever);
    ``tf.io.gfile``'s for URLs such as ``gs://``. Raises OSError when it cannot be opened."""
    if "://" in path:
        return import_tensorflow().io.gfile.GFile(path, "rb")
    _stat_regular(path)
    return open(path, "rb")


def read_for_dataset(path: str, max_edge: int) -> DatasetImage:
    """:func:`to_dataset_image` of the file at ``path``; decoders read only what they need of it."""
    try:
        file = open_file(path)
    except OSError as error:
        raise UnusableImage(f"cannot open: {error}") from None
    with file:
        return to_dataset_image(file, max_edge)


def to_dataset_image(file, max_edge: int) -> DatasetImage:
    """:func:`to_baseline_jpeg` of binary ``file`` with the digest of the picture stored, from the one decode."""
    with opened_image(file) as image:
        jpeg, height, width, picture = _stored(file, image, max_edge)
        return DatasetImage(jpeg, height, width, image_digest.of(picture))


def to_baseline_jpeg(file, max_edge: int) -> tuple:
    """(jpeg bytes, height, width): the image in binary ``file`` as an upright baseline RGB JPEG
    whose longer edge is at most ``max_edge``.

    A file that already is one is returned byte for byte, so it is not encoded twice.
    Raises :class:`UnusableImage` for anything Pillow cannot turn into such a picture,
    including images over Pillow's decompression bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    with opened_image(file) as image:
        return _stored(file, image, max_edge)[:3]


def _stored(file, image: Image.Image, max_edge: int) -> tuple:
    """(jpeg bytes, height, width, the picture they hold, maybe in grey and reduced for the digest) of ``image``,
    opened from binary ``file``."""
    if _is_baseline_jpeg_within(image, max_edge):
        height, width = image.height, image.width
        # Decoded once, so a truncated file is caught here, not in training: every byte is read, but the decoder
        # computes grey pixels at 1/2 to 1/8 scale, all the digest uses, in a fraction of a full decode's time.
        image.draft("L", image_digest.SMALLEST_PICTURE)
        image.load()
        file.seek(0)
        return file.read(), height, width, image
    jpeg, picture = _reencoded(image, max_edge)
    return jpeg, picture.height, picture.width, picture


@contextlib.contextmanager
def opened_image(file):
    """Pillow's image of binary ``file``, of which only the header is read so far (format, size,
    pixel limit), so nothing else is read from a file that is no image. Any failure in the
    ``with`` block, decoding included, becomes an UnusableImage saying why."""
    try:
        with Image.open(file) as image:
            yield image
    except UnusableImage:
        raise
    except UnidentifiedImageError:
        file.seek(0)
        raise UnusableImage("not an image format Pillow can read" if file.read(1) else "empty file") from None
    except Image.DecompressionBombError as error:
        raise UnusableImage(f"too many pixels, over Pillow's decompression bomb limit: {error}") from None
    except Exception as error:  # damaged files make decoders raise anything from OSError to SyntaxError
        raise UnusableImage(f"unreadable or damaged image ({type(error).__name__}: {error})") from None


def _is_baseline_jpeg_within(image: Image.Image, max_edge: int) -> bool:
    """Whether the file already is what :func:`to_baseline_jpeg` would make of it."""
    return (
        image.format == "JPEG"
        and image.mode == "RGB"
        and not image.info.get("progressive")
        and max(image.size) <= max_edge
        and image.getexif().get(ExifTags.Base.Orientation, 1) not in _ORIENTATIONS_NEEDING_TRANSPOSE
    )


def _reencoded(image: Image.Image, max_edge: int) -> tuple:
    """(jpeg, picture) of ``image`` upright, in RGB, shrunk to ``max_edge``, encoded anew."""
    image.draft("RGB", _fitted_size(image.size, max_edge))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # before any conversion, which would drop TIFF tags
    rgb = _as_rgb(image)
    rgb.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    encoded = io.BytesIO()
    rgb.save(encoded, "JPEG", quality=JPEG_QUALITY)
    return encoded.getvalue(), rgb


def _fitted_size(size: tuple, max_edge: int) -> tuple:
    """``size`` scaled, aspect kept, so its longer edge is at most ``max_edge`` (never enlarged)."""
    scale = min(1.0, max_edge / max(size))
    return tuple(max(1, round(edge * scale)) for edge in size)


def _as_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels of any mode: transparency composited on white, 16-bit scaled rather than clipped."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        # Pillow's conversion of wide integers to 8 bits clips at 255; 16-bit data needs scaling.
        image = image.convert("I").point(lambda value: value / 256)
    if image.has_transparency_data:
        white = Image.new("RGBA", image.size, "white")
        white.alpha_composite(image.convert("RGBA"))
        image = white
    return image if image.mode == "RGB" else image.convert("RGB")
