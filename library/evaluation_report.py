"""What a person looks at after an evaluation: confusion matrix, per-class figures and the worst mistakes.

The model_fn provides the raw material as evaluation metrics, streamed over the same pass as
the others (``project/model_fn.py``, ``report_metrics``):

- ``confusion_matrix``: int counts [true class, predicted class];
- ``mistakes/probability``, ``mistakes/label``, ``mistakes/prediction``, ``mistakes/image``
  (uint8 [N, H, W, 3]) and optionally ``mistakes/filename``: the most confidently wrong
  images, most confident first; a negative probability marks an unused slot.

From these, :func:`build` makes a JSON-ready report (counts and rates), :func:`write_summaries`
puts it into TensorBoard (a confusion-matrix image, per-class precision/recall/F1 scalars, a
grid of the mistakes), :func:`table` prints it. Rates whose denominator is zero (a class
never predicted, or absent from the evaluation data) are None: no number would be honest.

Class and file names are user data, drawn as they are: never as matplotlib's mathtext (a
name like ``$5 #1 $6`` would stop the run, ``price $5-$10`` would lose its dollar signs), in
matplotlib's default font with any installed font that has the characters it lacks (CJK, emoji)
as a fallback; characters no installed font has are drawn as boxes, with one warning a process.
"""

import functools
import io
import json
import math
import os
import sys
import warnings

import numpy as np

from library import atomic_file
from library.tensorflow_env import import_tensorflow

CONFUSION_MATRIX = "confusion_matrix"
MISTAKES = "mistakes/"
MAX_CLASSES_DRAWN = 30  # Beyond this the image shows the most confused classes only, so labels stay readable.
MOST_CONFUSED_PRINTED = 3
LABEL_CHARACTERS = 24  # Class and file names are shortened to this in images.
MISTAKE_COLUMNS = 4
MISTAKE_PIXELS = 128  # Smaller mistake images are enlarged towards this size by a whole factor.
CAPTION_WIDTH, CAPTION_HEIGHT = 190, 44  # pixels of a caption (three lines)
DPI = 100
LAST_RESORT_FONT = "Last Resort"  # matplotlib's own final fallback: a box for every character
_undrawable_warned = set()  # characters already named in a warning of this process


def split(results: dict) -> tuple:
    """(scalar results, array results): evaluations.jsonl, the best-snapshot record and summaries take the scalars."""
    scalars = {key: value for key, value in results.items() if np.ndim(value) == 0}
    arrays = {key: value for key, value in results.items() if key not in scalars}
    return scalars, arrays


def build(arrays: dict, class_names: list, global_step: int) -> dict:
    """The JSON-ready report of an evaluation's array results, or None without a confusion matrix."""
    if CONFUSION_MATRIX not in arrays:
        return None
    matrix = np.asarray(arrays[CONFUSION_MATRIX], np.int64)
    if matrix.shape != (len(class_names),) * 2:
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {len(class_names)} class names")
    return {
        "global_step": int(global_step),
        "class_names": list(class_names),
        "examples": int(matrix.sum()),
        "correct": int(np.trace(matrix)),
        "confusion_matrix": matrix.tolist(),
        "per_class": per_class(matrix, class_names),
        "most_confused": most_confused(matrix, class_names),
        "mistakes": mistakes(arrays, class_names),
    }


def per_class(matrix: np.ndarray, class_names: list) -> list:
    """Support, predictions, correct predictions, precision, recall and F1 of each class, in label order."""
    figures = []
    for index, name in enumerate(class_names):
        correct, support, predicted = int(matrix[index, index]), int(matrix[index].sum()), int(matrix[:, index].sum())
        precision = correct / predicted if predicted else None
        recall = correct / support if support else None
        if precision is None or recall is None:
            f1 = None
        else:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures.append({"class": name, "support": support, "predicted": predicted, "correct": correct,
                        "precision": precision, "recall": recall, "f1": f1})
    return figures


def most_confused(matrix: np.ndarray, class_names: list) -> list:
    """Every (true, predicted) pair of different classes that occurred, most frequent first.

    ``rate`` is the share of the true class's images predicted as the other class; ties in
    count go to the higher rate, then to label order.
    """
    supports = matrix.sum(axis=1)
    pairs = [(int(matrix[true, predicted]), true, predicted) for true, predicted in zip(*np.nonzero(matrix))
             if true != predicted]
    pairs.sort(key=lambda pair: (-pair[0], -pair[0] / supports[pair[1]], pair[1], pair[2]))
    return [{"true": class_names[true], "predicted": class_names[predicted], "count": count,
             "rate": count / int(supports[true])} for count, true, predicted in pairs]


def mistakes(arrays: dict, class_names: list) -> list:
    """The worst mistakes (file name when known, true and predicted class, probability), most confident first."""
    if MISTAKES + "probability" not in arrays:
        return []
    used = np.asarray(arrays[MISTAKES + "probability"]) >= 0
    filenames = arrays.get(MISTAKES + "filename")
    listed = []
    for slot in np.flatnonzero(used):
        entry = {"true": class_names[int(arrays[MISTAKES + "label"][slot])],
                 "predicted": class_names[int(arrays[MISTAKES + "prediction"][slot])],
                 "probability": float(arrays[MISTAKES + "probability"][slot])}
        if filenames is not None:
            entry["file"] = filenames[slot].decode("utf-8", "replace")
        listed.append(entry)
    return listed


def write_json(path: str, report: dict) -> None:
    """The report as JSON, written atomically (a script may read it at any moment).

    One line per matrix row, class, confused pair and mistake: readable, and short even with many classes.
    """
    fields = []
    for key, value in report.items():
        if isinstance(value, list) and value and isinstance(value[0], (list, dict)):
            value = "[\n  " + ",\n  ".join(json.dumps(item) for item in value) + "\n ]"
        else:
            value = json.dumps(value)
        fields.append(f" {json.dumps(key)}: {value}")
    atomic_file.write_text(path, "{\n" + ",\n".join(fields) + "\n}\n")


def json_path(model_dir: str, global_step: int) -> str:
    """Where a training run keeps the report of its evaluation at ``global_step``: beside evaluations.jsonl."""
    return os.path.join(model_dir, f"evaluation-{global_step}.json")


def write_summaries(eval_dir: str, report: dict, arrays: dict) -> None:
    """The report in TensorBoard's eval run at the evaluated step: images of the matrix and the mistakes, scalars per class.

    Written through the FileWriter Estimator uses for ``eval_dir``, into the same event file.
    """
    tf = import_tensorflow()
    values = [image_value("confusion_matrix", confusion_matrix_png(report))]
    if report["mistakes"]:
        values.append(image_value("worst_mistakes", mistakes_png(report, arrays[MISTAKES + "image"])))
    for figures in report["per_class"]:
        for figure in ("precision", "recall", "f1"):
            if figures[figure] is not None:
                values.append(tf.compat.v1.Summary.Value(tag=f"{figure}_per_class/{figures['class']}",
                                                         simple_value=figures[figure]))
    writer = tf.compat.v1.summary.FileWriterCache.get(eval_dir)
    writer.add_summary(tf.compat.v1.Summary(value=values), report["global_step"])
    writer.flush()


def image_value(tag: str, png: bytes):
    """A TensorBoard image summary value holding ``png``."""
    tf = import_tensorflow()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # the PNG's IHDR chunk
    image = tf.compat.v1.Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
    return tf.compat.v1.Summary.Value(tag=tag, image=image)


def drawn_classes(matrix: np.ndarray) -> list:
    """Label ids to draw: all, or the ``MAX_CLASSES_DRAWN`` with the most mistakes (as true or predicted class)."""
    if len(matrix) <= MAX_CLASSES_DRAWN:
        return list(range(len(matrix)))
    errors = matrix.sum(axis=0) + matrix.sum(axis=1) - 2 * np.diag(matrix)
    return sorted(np.argsort(-errors, kind="stable")[:MAX_CLASSES_DRAWN].tolist())


def confusion_matrix_png(report: dict) -> bytes:
    """The confusion matrix as a PNG: rows true, columns predicted, colour the share of the true class, cells the counts.

    The layout is computed, not left to a layout engine, which would draw the figure several times over.
    """
    matrix = np.asarray(report["confusion_matrix"])
    shown = drawn_classes(matrix)
    supports = matrix.sum(axis=1, keepdims=True)
    rates = (matrix / np.maximum(supports, 1))[np.ix_(shown, shown)]
    counts = matrix[np.ix_(shown, shown)]
    names = [_short(report["class_names"][index]) for index in shown]
    font = 8 if len(shown) <= 15 else 6
    labels = 0.5 + max(len(name) for name in names) * font * 0.6 / 72  # inches for tick labels and axis title
    side = max(3.0, 0.3 * len(shown))
    width, height = labels + side + 1.3, labels + side + 0.6
    figure = _figure(width, height)
    axes = figure.add_axes((labels / width, labels / height, side / width, side / height))
    picture = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    colorbar = figure.add_axes(((labels + side + 0.2) / width, labels / height, 0.15 / width, side / height))
    figure.colorbar(picture, cax=colorbar, label="share of the true class")
    style = literal_text_style(names)
    axes.set_xticks(range(len(shown)), names, rotation=90, fontsize=font, **style)
    axes.set_yticks(range(len(shown)), names, fontsize=font, **style)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axes.text(column, row, str(count), ha="center", va="center", fontsize=font - 1,
                      color="white" if rates[row, column] > 0.5 else "black")
    title = f"step {report['global_step']}: {report['correct']} of {report['examples']} correct"
    if len(shown) < len(matrix):
        title += f"\nonly the {len(shown)} most confused of {len(matrix)} classes shown"
    axes.set_title(title, fontsize=10)
    return _png(figure, title)


def mistakes_png(report: dict, images: np.ndarray) -> bytes:
    """The most confidently wrong images in a grid, each captioned with its true and predicted class and probability.

    The images are pasted at their own pixels (small ones enlarged by a whole factor) with
    one caption each: no axes to lay out, so it is quick to draw.
    """
    listed = report["mistakes"]
    images = np.asarray(images[:len(listed)])
    zoom = max(1, MISTAKE_PIXELS // max(images.shape[1:3]))
    images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    image_height, image_width = images.shape[1:3]
    cell_width, cell_height = max(image_width, CAPTION_WIDTH) + 10, image_height + CAPTION_HEIGHT
    rows = math.ceil(len(listed) / MISTAKE_COLUMNS)
    canvas = np.full((rows * cell_height, MISTAKE_COLUMNS * cell_width, 3), 255, np.uint8)
    figure = _figure(canvas.shape[1] / DPI, canvas.shape[0] / DPI)
    for slot, (image, mistake) in enumerate(zip(images, listed)):
        row, column = divmod(slot, MISTAKE_COLUMNS)
        top, left = row * cell_height + CAPTION_HEIGHT, column * cell_width + (cell_width - image_width) // 2
        canvas[top:top + image_height, left:left + image_width] = image
        caption = f"true: {_short(mistake['true'])}\npred: {_short(mistake['predicted'])} ({mistake['probability']:.0%})"
        if "file" in mistake:
            caption = _short(os.path.basename(mistake["file"])) + "\n" + caption
        figure.text((column + 0.5) * cell_width / canvas.shape[1], 1 - (row * cell_height + 3) / canvas.shape[0],
                    caption, ha="center", va="top", fontsize=6.5, **literal_text_style([caption]))
    figure.figimage(canvas, origin="upper")
    return _png(figure, f"step {report['global_step']}: the {len(listed)} most confidently wrong images")


def literal_text_style(texts: list) -> dict:
    """Text properties that draw ``texts`` (user data) as they are: no mathtext, fonts that have their characters."""
    return {"parse_math": False, "fontfamily": font_families("".join(texts))}


def font_families(text: str) -> list:
    """matplotlib's default font, then installed fonts that have the characters of ``text`` it lacks (matplotlib
    draws each character in the first that has it); one warning for new characters no installed font has."""
    from matplotlib import font_manager

    default = font_manager.FontProperties()
    missing = {character for character in text if character.isprintable()} - _characters(font_manager.findfont(default))
    families = [default.get_name()]
    for entry in font_manager.fontManager.ttflist if missing else ():
        found = missing & _characters(entry.fname)
        if found and not entry.name.startswith(LAST_RESORT_FONT):
            missing -= found
            if entry.name not in families:
                families.append(entry.name)
    _warn_undrawable(missing - _undrawable_warned)
    return families


@functools.cache
def _characters(font_file: str) -> frozenset:
    """The characters the font file has a glyph for."""
    from matplotlib.ft2font import FT2Font

    return frozenset(chr(code) for code in FT2Font(font_file).get_charmap())


def _warn_undrawable(characters: set) -> None:
    """One line on stderr naming characters of class or file names that no installed font can draw."""
    if characters:
        _undrawable_warned.update(characters)
        print(f"warning: evaluation report: no installed font has {' '.join(sorted(characters))} (of class or file "
              "names); TensorBoard's images draw them as boxes, the JSON report and the printed table keep them; "
              "install a font that has them (e.g. Noto Sans CJK) to draw them", file=sys.stderr, flush=True)


def _figure(width: float, height: float):
    """A matplotlib figure drawn by the Agg backend, without pyplot's global state (nor a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A glyph no font has is drawn as a box; font_families has said so once, not once per glyph and image.
    warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure, description: str) -> bytes:
    """The figure as PNG bytes, ``description`` also in its metadata (for scripts and tests; no OCR needed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Description": description})
    return buffer.getvalue()


def _short(name: str) -> str:
    return name if len(name) <= LABEL_CHARACTERS else name[:LABEL_CHARACTERS - 1] + "…"


def table(report: dict) -> str:
    """Per-class precision, recall, F1 and support in label order, then the most confused pairs: for a terminal."""
    width = max(len("class"), *(len(name) for name in report["class_names"]))
    lines = [f"{'class':<{width}}  precision  recall      f1  support"]
    for figures in report["per_class"]:
        rates = "".join(f"{_rate(figures[figure]):>{size}}" for figure, size in (("precision", 9), ("recall", 8),
                                                                                 ("f1", 8)))
        lines.append(f"{figures['class']:<{width}}  {rates}  {figures['support']:>7}")
    pairs = report["most_confused"][:MOST_CONFUSED_PRINTED]
    lines.append("most confused (true -> predicted):" + ("" if pairs else " none, no mistakes"))
    lines += [f"  {pair['true']} -> {pair['predicted']}: {pair['count']} ({pair['rate']:.1%} of {pair['true']})"
              for pair in pairs]
    return "\n".join(lines)


def _rate(value) -> str:
    return "-" if value is None else f"{value:.4f}"
