"""The demo: its shipped photos (size, splits, credits) and its accuracy guard."""

import os
import re

import pytest

import demo
from tests.helpers import ROOT

PHOTOS = os.path.join(ROOT, demo.PHOTOS_DIR)


def photos_of(split):
    """{class: [file, ...]} of one split of the shipped photos."""
    folder = os.path.join(PHOTOS, split)
    return {name: sorted(os.listdir(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


def test_the_shipped_photos_fit_in_5_mb_with_a_test_split_of_their_own_and_every_one_credited():
    train, test = photos_of("train"), photos_of("test")
    assert list(train) == list(test) == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert sum(map(len, test.values())) >= 100 and all(len(files) == 20 for files in test.values())
    assert not any(set(train[name]) & set(test[name]) for name in train)
    total = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(PHOTOS) for name in names)
    assert total <= 5_000_000
    credits = open(os.path.join(PHOTOS, "ATTRIBUTION.md")).read()
    assert "Creative Commons Attribution 2.0" in credits
    for split, classes in (("train", train), ("test", test)):
        for name, files in classes.items():
            for file in files:
                photo_id = re.match(r"(\d+)_", file).group(1)
                assert f"| {split}/{name}/{file} | https://www.flickr.com/photo.gne?id={photo_id} |" in credits


@pytest.mark.parametrize("accuracy, code", [(0.91, 0), (0.849, 1)])
def test_the_demo_fails_below_85_percent(monkeypatch, capsys, tmp_path, accuracy, code):
    steps = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "convert", lambda split, labels_file=None: steps.append(("convert", split)))
    monkeypatch.setattr(demo, "run_step", lambda *argv: steps.append(argv[:4]))
    monkeypatch.setattr(demo, "best_accuracy", lambda best_model_dir: accuracy if "demo_finetune" not in best_model_dir
                        else 0.5)
    assert demo.main() == code
    assert steps[:2] == [("convert", "train"), ("convert", "test")]
    assert [argv[1] for argv in steps[2:]] == ["demo"] * 5 + ["demo_finetune"]
    out, err = capsys.readouterr()
    assert f"demo test accuracy: {accuracy:.2%} with the head on the frozen network" in out
    assert err == ("" if code == 0 else "error: the demo should reach 85% test accuracy\n")
