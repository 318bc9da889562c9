"""library.evaluation_report: per-class figures and confused pairs against hand-computed values, images, summaries."""

import io
import json

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from library import evaluation_report

CLASS_NAMES = ["cat", "dog", "fox", "owl"]
# Rows true, columns predicted. owl is never in the data, nobody is predicted fox.
MATRIX = np.array([
    [5, 3, 0, 2],
    [1, 4, 0, 0],
    [0, 2, 0, 1],
    [0, 0, 0, 0],
])
MISTAKES = {
    "mistakes/probability": np.array([0.9, 0.625, -1.0], np.float32),
    "mistakes/label": np.array([0, 2, 0]),
    "mistakes/prediction": np.array([1, 3, 0]),
    "mistakes/image": np.zeros([3, 8, 8, 3], np.uint8),
    "mistakes/filename": np.array([b"cats/x.jpg", b"foxes/y.jpg", b""], object),
}


def make_report(matrix=MATRIX, class_names=CLASS_NAMES, **arrays):
    return evaluation_report.build({"confusion_matrix": matrix, **arrays}, class_names, global_step=42)


def test_split_moves_arrays_out_of_the_scalar_results():
    scalars, arrays = evaluation_report.split({"loss": np.float32(0.5), "global_step": np.int64(3), **MISTAKES})
    assert set(scalars) == {"loss", "global_step"} and set(arrays) == set(MISTAKES)


def test_per_class_figures_are_the_hand_computed_ones():
    figures = {entry["class"]: entry for entry in make_report()["per_class"]}
    assert figures["cat"] == pytest.approx({"class": "cat", "support": 10, "predicted": 6, "correct": 5,
                                            "precision": 5 / 6, "recall": 0.5, "f1": 2 * (5 / 6) * 0.5 / (5 / 6 + 0.5)})
    assert figures["dog"] == pytest.approx({"class": "dog", "support": 5, "predicted": 9, "correct": 4,
                                            "precision": 4 / 9, "recall": 0.8, "f1": 2 * (4 / 9) * 0.8 / (4 / 9 + 0.8)})
    # Never predicted: no precision, so no F1; recall 0 of 3.
    assert figures["fox"] == {"class": "fox", "support": 3, "predicted": 0, "correct": 0,
                              "precision": None, "recall": 0.0, "f1": None}
    # Absent from the data but predicted 3 times, all wrong.
    assert figures["owl"] == {"class": "owl", "support": 0, "predicted": 3, "correct": 0,
                              "precision": 0.0, "recall": None, "f1": None}


def test_most_confused_pairs_by_count_then_rate():
    report = make_report()
    pairs = [(pair["true"], pair["predicted"], pair["count"], pair["rate"]) for pair in report["most_confused"]]
    # Equal counts: the higher share of the true class first (fox -> dog, 2 of 3, before cat -> owl, 2 of 10).
    assert pairs == [("cat", "dog", 3, 0.3), ("fox", "dog", 2, 2 / 3), ("cat", "owl", 2, 0.2),
                     ("fox", "owl", 1, 1 / 3), ("dog", "cat", 1, 0.2)]
    assert (report["examples"], report["correct"], report["global_step"]) == (18, 9, 42)
    assert report["confusion_matrix"] == MATRIX.tolist()


def test_mistakes_skip_unused_slots_and_name_the_files():
    assert make_report(**MISTAKES)["mistakes"] == [
        {"true": "cat", "predicted": "dog", "probability": pytest.approx(0.9), "file": "cats/x.jpg"},
        {"true": "fox", "predicted": "owl", "probability": 0.625, "file": "foxes/y.jpg"},
    ]


def test_no_confusion_matrix_no_report():
    assert evaluation_report.build({"mistakes/probability": np.zeros(3)}, CLASS_NAMES, 1) is None


def test_table_prints_what_the_json_holds(tmp_path):
    report = make_report()
    path = tmp_path / "report.json"
    evaluation_report.write_json(str(path), report)
    written = json.loads(path.read_text())
    assert written == report
    assert "\n  [5, 3, 0, 2],\n" in path.read_text()  # a matrix row a line
    lines = evaluation_report.table(report).splitlines()
    assert lines[0].split() == ["class", "precision", "recall", "f1", "support"]
    rows = [line.split() for line in lines[1:1 + len(CLASS_NAMES)]]

    def shown(value):
        return "-" if value is None else f"{value:.4f}"

    assert rows == [[entry["class"], shown(entry["precision"]), shown(entry["recall"]), shown(entry["f1"]),
                     str(entry["support"])] for entry in written["per_class"]]
    assert lines[1 + len(CLASS_NAMES):] == [
        "most confused (true -> predicted):",
        "  cat -> dog: 3 (30.0% of cat)",
        "  fox -> dog: 2 (66.7% of fox)",
        "  cat -> owl: 2 (20.0% of cat)",
    ]


def test_summaries_are_in_the_eval_event_file(tmp_path):
    report = make_report(**MISTAKES)
    evaluation_report.write_summaries(str(tmp_path), report, MISTAKES)
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"confusion_matrix", "worst_mistakes"}
    for tag in ("confusion_matrix", "worst_mistakes"):
        (image,) = events.Images(tag)
        assert image.step == 42
        assert Image.open(io.BytesIO(image.encoded_image_string)).size == (image.width, image.height)
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    # Undefined figures are left out rather than drawn as 0.
    assert set(scalars) == {"precision_per_class/cat", "precision_per_class/dog", "precision_per_class/owl",
                            "recall_per_class/cat", "recall_per_class/dog", "recall_per_class/fox",
                            "f1_per_class/cat", "f1_per_class/dog"}
    assert scalars["precision_per_class/cat"][0].value == pytest.approx(5 / 6)
    assert scalars["recall_per_class/dog"][0].step == 42


def test_forty_classes_draw_the_thirty_most_confused_readably():
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(20, 50, 40))
    matrix[5, 7] = matrix[12, 3] = matrix[39, 0] = 9  # classes 0, 3, 5, 7, 12 and 39 confused
    matrix += rng.integers(0, 2, (40, 40)) * (rng.random((40, 40)) < 0.05)
    names = [f"species_{index:02d}_with_a_rather_long_latin_name" for index in range(40)]
    report = make_report(matrix, names)
    shown = evaluation_report.drawn_classes(matrix)
    assert len(shown) == 30 and shown == sorted(shown) and {0, 3, 5, 7, 12, 39} <= set(shown)
    png = evaluation_report.confusion_matrix_png(report)
    image = Image.open(io.BytesIO(png))
    assert len(png) < 1_000_000 and max(image.size) <= 1600
    assert "only the 30 most confused of 40 classes shown" in image.text["Description"]


def test_a_few_classes_are_all_drawn():
    image = Image.open(io.BytesIO(evaluation_report.confusion_matrix_png(make_report())))
    assert image.text["Description"] == "step 42: 9 of 18 correct" and max(image.size) <= 800


def test_a_matrix_that_does_not_fit_the_class_names_is_refused():
    with pytest.raises(ValueError, match=r"confusion matrix of shape \(4, 4\) for 3 class names"):
        make_report(class_names=CLASS_NAMES[:3])


def drawn_texts(monkeypatch, draw) -> list:
    """The matplotlib Text artists (with text) of the figure ``draw()`` makes into a PNG."""
    from matplotlib.text import Text

    figures = []
    png = evaluation_report._png
    monkeypatch.setattr(evaluation_report, "_png", lambda figure, description: (figures.append(figure),
                                                                                png(figure, description))[1])
    draw()
    (figure,) = figures
    return [artist for artist in figure.findobj(Text) if artist.get_text()]


def test_names_holding_dollar_signs_and_backslashes_are_drawn_as_they_are(monkeypatch):
    names = ["$5 #1 $6", "price $5-$10", r"\alpha", "owl"]  # mathtext would stop at the first, alter the others
    arrays = {**MISTAKES, "mistakes/filename": np.array([b"receipt $5 #1 $6.jpg", b"price $5-$10.jpg", b""], object)}
    report = make_report(class_names=names, **arrays)
    matrix = drawn_texts(monkeypatch, lambda: evaluation_report.confusion_matrix_png(report))
    grid = drawn_texts(monkeypatch, lambda: evaluation_report.mistakes_png(report, arrays["mistakes/image"]))
    assert {"$5 #1 $6", "price $5-$10", r"\alpha"} <= {artist.get_text() for artist in matrix}
    assert "receipt $5 #1 $6.jpg\ntrue: $5 #1 $6\npred: price $5-$10 (90%)" in [artist.get_text() for artist in grid]
    for artist in matrix + grid:
        assert not artist.get_usetex()
        assert not artist.get_parse_math() or "$" not in artist.get_text(), artist.get_text()


def test_characters_the_default_font_lacks_come_from_installed_fonts_else_one_warning(monkeypatch, capsys):
    import warnings

    from matplotlib import font_manager

    stix_only = "\u1d81"  # LATIN SMALL LETTER D WITH PALATAL HOOK: in matplotlib's STIX fonts, not in DejaVu Sans
    names = ["猫", f"犬🐶 {stix_only}", "cat", "dog"]
    report = make_report(class_names=names)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = drawn_texts(monkeypatch, lambda: evaluation_report.confusion_matrix_png(report))
        evaluation_report.confusion_matrix_png(report)  # the next evaluation's drawing
    assert [str(warning.message) for warning in caught] == []
    assert capsys.readouterr().err == (
        "warning: evaluation report: no installed font has 犬 猫 🐶 (of class or file names); TensorBoard's images draw "
        "them as boxes, the JSON report and the printed table keep them; install a font that has them (e.g. Noto Sans "
        "CJK) to draw them\n")
    label = next(artist for artist in labels if artist.get_text() == f"犬🐶 {stix_only}")
    default, fallback = label.get_fontfamily()  # DejaVu Sans, then the one installed font with the STIX character
    assert default == "DejaVu Sans" and stix_only in "".join(evaluation_report._characters(
        font_manager.findfont(font_manager.FontProperties(family=fallback))))
    assert evaluation_report.font_families("cat dog") == ["DejaVu Sans"]
