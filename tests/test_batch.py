"""`ferkit batch` on a local Ray: the same rows as `ferkit predict --csv`, a bad file becomes a row."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import REAL_FACES, needs_face_detector, needs_real_faces
from typer.testing import CliRunner

from ferkit.cli import app

pytest.importorskip("ray")
pytestmark = pytest.mark.ray

PHOTOS = ("2008_001009.jpg", "2008_001322.jpg", "2008_002506.jpg", "dogs.jpg")


@pytest.fixture
def folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(REAL_FACES / name, photos / name)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    return photos


@needs_real_faces
@needs_face_detector
def test_batch_on_local_ray_writes_the_rows_of_predict(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = CliRunner()
    predicted = runner.invoke(app, ["predict", str(folder), "--csv", str(tmp_path / "predict.csv"),
                                    "--model", "fast"])
    assert predicted.exit_code == 1  # the broken file
    batched = runner.invoke(app, ["batch", str(folder), "--out", str(tmp_path / "batch.csv"),
                                  "--model", "fast"])
    assert batched.exit_code == 1, batched.output  # as predict: a file failed
    assert "5 files ->" in batched.output and "1 files failed" in batched.output
    assert (tmp_path / "batch.csv").read_text() == (tmp_path / "predict.csv").read_text()
    rows = list(csv.DictReader((tmp_path / "batch.csv").open()))
    assert any(r["file"].endswith("broken.jpg") and "not an image" in r["error"] for r in rows)
    assert any(r["file"].endswith("dogs.jpg") and not r["face"] for r in rows)  # no face: one empty row


@needs_real_faces
@needs_face_detector
@pytest.mark.parametrize("cause,exit_code,first_words", [
    (KeyboardInterrupt, 130, "stopped (KeyboardInterrupt): the rows of "),
    (ConnectionError("the cluster went away"), 1,
     "error: stopped (ConnectionError: the cluster went away): the rows of "),
], ids=["ctrl-c", "lost-cluster"])
def test_a_csv_batch_stopped_part_way_keeps_the_rows_it_has(folder, tmp_path, monkeypatch, cause, exit_code,
                                                            first_words):
    import ray.data

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    iter_rows = ray.data.Dataset.iter_rows

    def stop_after_two_rows(self, *args, **kwargs):
        for n, row in enumerate(iter_rows(self, *args, **kwargs)):
            if n == 2:
                raise cause
            yield row

    monkeypatch.setattr(ray.data.Dataset, "iter_rows", stop_after_two_rows)
    out = tmp_path / "batch.csv"
    result = CliRunner().invoke(app, ["batch", str(folder), "--out", str(out), "--model", "fast"])
    assert result.exit_code == exit_code, result.output  # 130 for Ctrl-C only, 1 for a failure
    # (Ray's own logging may complain about the test runner's closed streams: only our last line counts)
    assert result.output.strip().splitlines()[-1].startswith(first_words)
    assert "of 5 files are in" in result.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(r["file"] for r in rows)


def test_lists_of_paths_with_or_without_a_header_and_bad_lists(tmp_path):
    from ferkit.batch import list_sources
    from ferkit.errors import FerkitError

    (tmp_path / "with.csv").write_text("id,path\n1,a.jpg\n2,b.jpg\n")
    (tmp_path / "bare.csv").write_text("a.jpg\nb.jpg\n")
    for name in ("with.csv", "bare.csv"):
        assert list_sources(tmp_path / name) == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    (tmp_path / "latin1.csv").write_bytes("path\ncaf\xe9.jpg\n".encode("latin-1"))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    for name, message in (("latin1.csv", "not a UTF-8 CSV"), ("broken.parquet", "not a readable Parquet")):
        with pytest.raises(FerkitError, match=message):
            list_sources(tmp_path / name)


def test_batch_never_writes_over_its_list_or_an_existing_file(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path\nphotos/a.jpg\n")
    (tmp_path / "results").write_text("an earlier result, kept")
    for out, message in ((listing, "is an input file"), (tmp_path / "results", "is not an empty folder")):
        result = CliRunner().invoke(app, ["batch", str(listing), "--out", str(out)])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output
    assert listing.read_text() == "path\nphotos/a.jpg\n"
    assert (tmp_path / "results").read_text() == "an earlier result, kept"


@needs_real_faces
@needs_face_detector
def test_batch_from_a_list_to_parquet_reports_a_missing_file_as_a_row(folder, tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join(f"photos/{n}" for n in PHOTOS[:2]) + "\nphotos/gone.jpg\n")
    out = tmp_path / "faces"
    result = CliRunner().invoke(app, ["batch", str(listing), "--out", str(out), "--model", "fast"])
    assert result.exit_code == 1, result.output  # gone.jpg
    table = pq.read_table(out).to_pylist()
    assert {r["file"].rsplit("/", 1)[-1] for r in table} == {"2008_001009.jpg", "2008_001322.jpg", "gone.jpg"}
    gone = [r for r in table if r["file"].endswith("gone.jpg")]
    assert len(gone) == 1 and "file not found" in gone[0]["error"]
    faces = [r for r in table if r["face"] is not None]
    assert faces and all(0 <= r["confidence"] <= 1 and r["emotion"] for r in faces)


def test_entries_that_cannot_be_read_are_rows_with_their_error(tmp_path):
    from ferkit.batch import sort_entries

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    entries = [str(tmp_path / "a.jpg"), f"file://{tmp_path / 'a.jpg'}", str(tmp_path / "sub"),
               "http://127.0.0.1:9/x.jpg", str(tmp_path / "gone.jpg"), str(tmp_path / "a.jpg")]
    to_read, failed = sort_entries(entries)
    assert [e["index"] for e in to_read] == [0, 1, 5] and to_read[1]["path"] == str(tmp_path / "a.jpg")
    errors = {f["index"]: f["error"] for f in failed}
    assert "is a folder" in errors[2] and "--allow-remote" in errors[3] and "file not found" in errors[4]
    to_read, failed = sort_entries(entries, allow_remote=True)
    assert [e["index"] for e in to_read] == [0, 1, 3, 5] and to_read[2]["remote"]


@needs_real_faces
@needs_face_detector
def test_a_list_mixing_local_and_remote_files_keeps_its_order_and_caps_remote_bodies(folder, tmp_path,
                                                                                     monkeypatch):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from PIL import Image

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    served = tmp_path / "served"
    served.mkdir()
    Image.new("L", (60, 60), 128).save(served / "small.png")  # a few hundred bytes
    shutil.copy(REAL_FACES / PHOTOS[0], served / "large.jpg")  # tens of KB: above the 0.01 MB cap
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    photo = str(folder / PHOTOS[0])
    entries = [photo, f"{base}/small.png", str(folder), photo, f"{base}/large.jpg", f"file://{photo}"]
    listing = tmp_path / "list.csv"
    listing.write_text("path\n" + "\n".join(entries) + "\n")
    out = tmp_path / "rows.csv"
    try:
        result = CliRunner().invoke(app, ["batch", str(listing), "--out", str(out), "--model", "fast",
                                          "--allow-remote", "--max-remote-mb", "0.01"])
    finally:
        server.shutdown()
    assert result.exit_code == 1, result.output
    rows = list(csv.DictReader(out.open()))
    files = [r["file"] for r in rows]
    # input order kept, a repeated entry's rows together each time, one row per failed entry
    firsts = [f for i, f in enumerate(files) if i == 0 or files[i - 1] != f]
    assert firsts == entries, files
    by_file = {f: [r for r in rows if r["file"] == f] for f in entries}
    assert "is a folder" in by_file[str(folder)][0]["error"]
    assert "above the limit of 0.01 MB" in by_file[f"{base}/large.jpg"][0]["error"]
    assert not by_file[f"{base}/small.png"][0]["error"]  # fetched: a gray square, no face
    assert by_file[f"file://{photo}"][0]["emotion"] and by_file[photo][0]["emotion"]
