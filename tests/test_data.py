"""Reading FERPlus: both layouts, every bad-data case, --skip-bad, and the cache."""

from __future__ import annotations

import csv
import os
import time

import numpy as np
import pytest
from conftest import VOTE_ROWS, write_microsoft_root
from PIL import Image

from ferkit.data import label_split, load_ferplus, summarize
from ferkit.errors import DataError


def test_microsoft_layout_loads_images_votes_and_names(microsoft_root):
    data = load_ferplus(microsoft_root)
    assert data.layout == "microsoft"
    train = data["train"]
    assert train.images.shape == (6, 48, 48) and train.images.dtype == np.uint8
    assert train.votes.shape == (6, 10)
    np.testing.assert_array_equal(train.votes, VOTE_ROWS)
    assert train.image_names[0] == "fer0000000.png"
    on_disk = np.asarray(Image.open(microsoft_root / "FER2013Train" / "fer0000000.png"))
    np.testing.assert_array_equal(train.images[0], on_disk)


def test_kaggle_layout_gives_the_same_kind_of_dataset(kaggle_root):
    data = load_ferplus(kaggle_root)
    assert data.layout == "kaggle"
    assert [len(data[s]) for s in ("train", "valid", "test")] == [2, 2, 2]
    assert data.report.unlabeled == {"train": 1, "valid": 0, "test": 0}  # the empty image name
    assert data["train"].images.shape == (2, 48, 48)
    assert list(data["valid"].image_names) == ["fer0000003.png", "fer0000004.png"]
    np.testing.assert_array_equal(data["valid"].votes[0], VOTE_ROWS[3])


def test_label_split_keeps_only_protocol_survivors(microsoft_root):
    labeled = label_split(load_ferplus(microsoft_root)["train"], "majority")
    # rows 3 (no majority) and 4 (NF) are dropped
    assert list(labeled.labels) == [1, 0, 2, 4]
    assert labeled.dropped == {"not a face (NF)": 1, "unknown": 0, "no agreement": 1}


def test_summary_counts_per_class_and_drops(microsoft_root):
    s = summarize(load_ferplus(microsoft_root), "majority")
    train = s["splits"]["train"]
    assert train["labeled"] == 4 and train["images"] == 6
    assert train["per_class"]["happiness"] == 1 and train["per_class"]["anger"] == 1


# --- bad data: an error naming the file and row; --skip-bad loads the rest -----------------

def _label_rows(root):
    path = root / "FER2013Train" / "label.csv"
    return path, list(csv.reader(path.open()))


def _write_rows(path, rows):
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)


def test_missing_label_csv(microsoft_root):
    (microsoft_root / "FER2013Valid" / "label.csv").unlink()
    with pytest.raises(DataError, match=r"FER2013Valid/label.csv: label file not found"):
        load_ferplus(microsoft_root)


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        load_ferplus(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no FERPlus data"):
        load_ferplus(tmp_path)


@pytest.mark.parametrize("damage,message", [
    ("missing", "image file not found"),
    ("corrupt", "cannot decode image"),
    ("truncated", "cannot decode image"),
    ("not_image", "cannot decode image"),
    ("wrong_size", "image is 64x40, expected 48x48"),
])
def test_bad_image_names_file_and_row(microsoft_root, damage, message):
    path = microsoft_root / "FER2013Train" / "fer0000002.png"
    if damage == "missing":
        path.unlink()
    elif damage == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:60])
    elif damage == "not_image":
        path.write_text("hello, not a picture")
    else:
        Image.fromarray(np.zeros((40, 64), np.uint8)).save(path)
    with pytest.raises(DataError) as err:
        load_ferplus(microsoft_root)
    text = str(err.value)
    assert "FER2013Train/label.csv row 3" in text and "fer0000002.png" in text and message in text
    assert "--skip-bad" in text

    data = load_ferplus(microsoft_root, skip_bad=True)
    assert len(data["train"]) == 5 and len(data["valid"]) == 6
    assert len(data.report.skipped) == 1
    assert data.report.skipped[0].row == 3 and message in data.report.skipped[0].reason


@pytest.mark.parametrize("row,message", [
    (["fer0000001.png", "(0, 0, 48, 48)", 1, 2, 3], "expected 12 fields, got 5"),
    (["fer0000001.png", "(0, 0, 48, 48)", 7, "x", 1, 0, 0, 0, 0, 0, 2, 0],
     "field 'happiness': 'x' is not a whole number"),
    (["fer0000001.png", "(0, 0, 48, 48)", 7, -1, 1, 0, 0, 0, 0, 0, 2, 0],
     "field .happiness.: negative vote count"),
])
def test_bad_label_rows(microsoft_root, row, message):
    path, rows = _label_rows(microsoft_root)
    rows[1] = row
    _write_rows(path, rows)
    with pytest.raises(DataError, match=rf"label.csv row 2: {message}"):
        load_ferplus(microsoft_root)
    data = load_ferplus(microsoft_root, skip_bad=True)
    assert len(data["train"]) == 5
    assert "row 2" in str(data.report.skipped[0])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "I;16", "P"])
def test_non_gray_images_are_converted_with_a_record(microsoft_root, mode):
    path = microsoft_root / "FER2013Train" / "fer0000001.png"
    gray = np.asarray(Image.open(path))
    if mode == "I;16":
        img = Image.fromarray(gray.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(gray).convert(mode)
    img.save(path)
    data = load_ferplus(microsoft_root)
    assert data["train"].images.dtype == np.uint8
    assert np.abs(data["train"].images[1].astype(int) - gray).max() <= 1
    assert len(data.report.converted) == 1 and "converted" in data.report.converted[0].reason


def test_kaggle_bad_pixels_row(kaggle_root):
    path = kaggle_root / "fer2013.csv"
    rows = list(csv.reader(path.open()))
    rows[2][1] = "1 2 3"
    _write_rows(path, rows)
    with pytest.raises(DataError, match=r"fer2013.csv row 3: field 'pixels': expected 2304"):
        load_ferplus(kaggle_root)
    assert len(load_ferplus(kaggle_root, skip_bad=True)["train"]) == 1


def test_kaggle_pixel_out_of_range_names_the_value(kaggle_root):
    path = kaggle_root / "fer2013.csv"
    rows = list(csv.reader(path.open()))
    values = rows[1][1].split()
    values[5] = "300"
    rows[1][1] = " ".join(values)
    _write_rows(path, rows)
    with pytest.raises(DataError, match=r"fer2013.csv row 2: field 'pixels': value 300 is outside 0..255"):
        load_ferplus(kaggle_root)


@pytest.mark.parametrize("missing", [1, 2])
def test_kaggle_files_out_of_step_are_an_error_naming_the_first_bad_row(kaggle_root, missing):
    """A row deleted from fer2013new.csv must not shift every later image's votes onto its neighbour."""
    path = kaggle_root / "fer2013new.csv"
    rows = list(csv.reader(path.open()))
    del rows[1:1 + missing]  # data row 0 (fer0000000.png), and with 2 the next one, gone
    _write_rows(path, rows)
    for _ in range(2):  # the first load and any later one: no cache hides it
        with pytest.raises(DataError, match=r"fer2013new.csv row (2|3): 'Image name' is 'fer000000[13].png' "
                                            r"but this is data row (0|1) \(expected 'fer000000[01].png'\)"):
            load_ferplus(kaggle_root)


def test_kaggle_files_of_different_lengths_are_an_error(kaggle_root):
    with (kaggle_root / "fer2013.csv").open("a") as fh:
        fh.write("0," + " ".join(["1"] * 2304) + ",Training\n")
    with pytest.raises(DataError, match="different row counts: .*fer2013.csv has a row 9 and "
                                        ".*fer2013new.csv ends before it"):
        load_ferplus(kaggle_root)


def test_label_csv_with_a_byte_order_mark_reads_as_without(microsoft_root):
    label = microsoft_root / "FER2013Train" / "label.csv"
    label.write_bytes(b"\xef\xbb\xbf" + label.read_bytes())
    assert len(load_ferplus(microsoft_root)["train"]) == 6


def test_kaggle_missing_label_file(kaggle_root):
    (kaggle_root / "fer2013new.csv").unlink()
    with pytest.raises(DataError, match="fer2013new.csv: file not found"):
        load_ferplus(kaggle_root)


# --- cache --------------------------------------------------------------------------------

def test_second_load_uses_cache_and_a_changed_file_invalidates_it(microsoft_root, private_cache):
    first = load_ferplus(microsoft_root)
    assert not first.from_cache
    assert list(private_cache.glob("ferplus-*.npz"))
    second = load_ferplus(microsoft_root)
    assert second.from_cache
    np.testing.assert_array_equal(first["test"].images, second["test"].images)
    np.testing.assert_array_equal(first["test"].image_names, second["test"].image_names)

    path, rows = _label_rows(microsoft_root)
    rows[0][2:] = ["0", "0", "0", "0", "0", "0", "0", "10", "0", "0"]
    time.sleep(0.01)
    _write_rows(path, rows)
    third = load_ferplus(microsoft_root)
    assert not third.from_cache
    assert third["train"].votes[0, 7] == 10

    image = microsoft_root / "FER2013Test" / "fer0200000.png"
    Image.fromarray(np.full((48, 48), 7, np.uint8)).save(image)
    fourth = load_ferplus(microsoft_root)
    assert not fourth.from_cache and (fourth["test"].images[0] == 7).all()


def test_cache_keeps_the_skip_report(microsoft_root):
    (microsoft_root / "FER2013Train" / "fer0000002.png").unlink()
    load_ferplus(microsoft_root, skip_bad=True)
    again = load_ferplus(microsoft_root, skip_bad=True)
    assert again.from_cache and len(again.report.skipped) == 1


def test_unknown_split_is_a_clear_error(microsoft_root):
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        load_ferplus(microsoft_root, splits=("dev",))


def test_root_with_more_rows(tmp_path):
    root = write_microsoft_root(tmp_path / "r", rows_per_split=30)
    assert len(load_ferplus(root)["valid"]) == 30
