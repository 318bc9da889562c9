"""Folders of images as training data: list a class-per-folder tree, make any image file a JPEG.

:func:`list_class_folders` walks the tree through ``tf.io.gfile``, so it may live on any
filesystem TensorFlow supports. :func:`read_as_baseline_jpeg` is meant for worker
processes: it decodes with Pillow alone and reads local files through the OS, so workers
import TensorFlow only for URLs such as ``gs://``, and a stray multi-gigabyte video costs a
header read, not a copy into memory. Local folders are listed through the OS too, which,
unlike ``tf.io.gfile.listdir``, copes with file names that are not UTF-8.
"""

import dataclasses
import io
import os
import posixpath

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from library.tensorflow_env import import_tensorflow

JPEG_QUALITY = 90
# EXIF orientations 2-8 flip or rotate the stored pixels for display; 1 (or none) is upright.
_ORIENTATIONS_NEEDING_TRANSPOSE = range(2, 9)


class UnusableImage(Exception):
    """A file that cannot become a training image; the message says why, for the user's report."""


@dataclasses.dataclass
class ClassFolders:
    """What :func:`list_class_folders` found below a dataset folder."""

    classes: list  # names of the visible folders directly below the root, sorted
    files: list  # "class/.../name" paths of the visible files anywhere below them, sorted
    total_bytes: int  # size of those files
    skipped: list  # (relative path, reason) of entries left out: unreadable, or a folder seen before


def resolved_path(path: str) -> str:
    """A path's identity: symlinks resolved on local disks (object stores have none), URLs kept."""
    return path if "://" in path else os.path.realpath(path)


def list_class_folders(root: str) -> ClassFolders:
    """The visible files below each visible top-level folder of ``root``, each folder a class.

    Hidden entries (name starting with a dot) are ignored, and so are files directly in
    ``root``, which belong to no class (a converter's own output may sit there). Every
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
        for relative, stat in _visible_entries(tf, root, folder, names, found.skipped):
            if not stat.is_directory:
                if folder:
                    found.files.append(relative)
                    found.total_bytes += stat.length
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


def _visible_entries(tf, root, folder, names, skipped):
    """(relative path, ``tf.io.gfile.stat``) of the non-hidden ``names``, sorted; failures go to ``skipped``."""
    for name in sorted(name.rstrip("/") for name in names):  # object stores end folder names with "/"
        if name.startswith("."):
            continue
        relative = posixpath.join(folder, name)
        try:
            relative.encode("utf-8")  # paths are stored, and handed to TensorFlow, as UTF-8
        except UnicodeEncodeError:
            printable = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            skipped.append((printable, "the name is not valid UTF-8; rename it"))
            continue
        try:
            yield relative, tf.io.gfile.stat(os.path.join(root, relative))
        except tf.errors.OpError as error:  # a broken symlink, a permission problem
            skipped.append((relative, f"cannot read: {error}"))


def _open_binary(path: str):
    """A binary file object for ``path``: the OS's for local paths, so worker processes need
    no TensorFlow; ``tf.io.gfile``'s for URLs such as ``gs://``."""
    if "://" in path:
        return import_tensorflow().io.gfile.GFile(path, "rb")
    return open(path, "rb")


def read_as_baseline_jpeg(path: str, max_edge: int) -> tuple:
    """:func:`to_baseline_jpeg` of the file at ``path``; decoders read only what they need of it."""
    try:
        file = _open_binary(path)
    except OSError as error:
        raise UnusableImage(f"cannot open: {error}") from None
    with file:
        return to_baseline_jpeg(file, max_edge)


def to_baseline_jpeg(file, max_edge: int) -> tuple:
    """(jpeg bytes, height, width): the image in binary ``file`` as an upright baseline RGB JPEG
    whose longer edge is at most ``max_edge``.

    A file that already is one is returned byte for byte, so it is not encoded twice.
    Raises :class:`UnusableImage` for anything Pillow cannot turn into such a picture,
    including images over Pillow's decompression bomb limit (``Image.MAX_IMAGE_PIXELS``).
    """
    try:
        with Image.open(file) as image:
            if _is_baseline_jpeg_within(image, max_edge):
                image.load()  # decode it once, so a truncated file is caught here, not in training
                file.seek(0)
                return file.read(), image.height, image.width
            return _reencoded(image, max_edge)
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
    """(jpeg, height, width) of ``image`` upright, in RGB, shrunk to ``max_edge``, encoded anew."""
    image.draft("RGB", _fitted_size(image.size, max_edge))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
    image.load()
    ImageOps.exif_transpose(image, in_place=True)  # before any conversion, which would drop TIFF tags
    rgb = _as_rgb(image)
    rgb.thumbnail((max_edge, max_edge), Image.Resampling.LANCZOS)
    encoded = io.BytesIO()
    rgb.save(encoded, "JPEG", quality=JPEG_QUALITY)
    return encoded.getvalue(), rgb.height, rgb.width


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
