"""`ferkit batch`: the photo pipeline over a large set of images on Ray Data (the `scale` extra).

    ferkit batch photos/ --out faces.parquet                  # a local Ray on this machine
    ferkit batch list.csv --out faces/ --address auto         # an existing Ray cluster, no code change

SOURCE is a folder (searched recursively), a glob, or a CSV/Parquet file whose `path` column (else
its first column) lists image paths (relative to the list) or URIs. Local paths and `file://` URIs are
read by the workers; remote URIs (http://, s3://, gs://, ... through fsspec) only with `--allow-remote`,
each capped at `--max-remote-mb`. `map_batches` feeds the entries to `FacePredictor`, a callable class
that holds one loaded Predictor per Ray actor (detection + alignment + classification) and reads each
entry itself. Every face becomes one row, in the columns of `ferkit predict --csv` (PREDICT_COLUMNS);
an image with no face gives one row with empty face fields, and an entry that cannot be read (missing,
a folder, a refused URI, not an image) gives one row with its error: a bad file never fails the job,
and the command exits 1 when any did. Rows keep the input's order, a repeated entry twice. DEST ending
in .csv gets one CSV (for what fits on one machine); anything else is a folder of Parquet files written
by the workers, with the entries that could not be read at all in `unread-files.parquet`. A CSV job
stopped part-way (Ctrl-C, a lost cluster) still writes the rows it has, in input order, and says how
many files they cover (BatchStopped on Ctrl-C, BatchFailed on an error); the workers' Parquet files are
kept as written.
"""

from __future__ import annotations

import csv
import glob as globbing
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ferkit import settings
from ferkit.errors import ArgumentError, FerkitError, ImageError
from ferkit.inference.face import PREDICT_COLUMNS, ROW_TYPES
from ferkit.inference.rows import predict_rows

ROW_COLUMNS = ["index", *PREDICT_COLUMNS]  # `index`: the entry's place in the input, for the order
COLUMN_TYPES = {"index": int, **ROW_TYPES}


def row_schema():
    """The Arrow schema of the face rows (ROW_TYPES): one type per column whatever a batch holds (a
    batch with no error, or no face, would otherwise infer a null column)."""
    import pyarrow as pa

    arrow = {int: pa.int64(), float: pa.float64(), str: pa.string()}
    return pa.schema([(c, arrow[COLUMN_TYPES[c]]) for c in ROW_COLUMNS])


@dataclass
class BatchReport:
    out: Path
    files: int
    rows: int = 0
    failed: list[str] = field(default_factory=list)  # "<file>: <error>"
    done: int = 0  # files whose rows are in `out`


def _stopped_message(report: BatchReport, cause: BaseException) -> str:
    why = type(cause).__name__ + (f": {str(cause)[:300]}" if str(cause) else "")
    return f"stopped ({why}): the rows of {report.done:,} of {report.files:,} files are in {report.out}"


class BatchStopped(KeyboardInterrupt):
    """A CSV batch stopped part-way by Ctrl-C (or another non-error exit); `report` says what was
    written (the rows of `report.done` files). Still a KeyboardInterrupt, so callers stop as asked."""

    def __init__(self, report: BatchReport, cause: BaseException):
        super().__init__(_stopped_message(report, cause))
        self.report = report


class BatchFailed(FerkitError):
    """A CSV batch failed part-way (a worker or Ray error); `report` says what was written."""

    def __init__(self, report: BatchReport, cause: BaseException):
        super().__init__(_stopped_message(report, cause))
        self.report = report


def list_sources(source: str | Path) -> list[str]:
    """Image paths/URIs named by SOURCE (a folder, a glob, or a CSV/Parquet list), in a stable order."""
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        from ferkit.inference import find_images

        files, problems = find_images([path])
        if not files:
            raise FerkitError("; ".join(problems) or f"{path}: no image files")
        return [str(f) for f in files]
    if path.is_file() and path.suffix.lower() in (".csv", ".parquet"):
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except (pa.ArrowException, OSError) as exc:
                raise FerkitError(f"{path}: not a readable Parquet file ({exc})") from None
            column = "path" if "path" in table.column_names else table.column_names[0]
            items = [str(v) for v in table.column(column).to_pylist() if v]
        else:
            try:
                with path.open(newline="", encoding="utf-8-sig") as fh:
                    rows = list(csv.reader(fh))
            except (UnicodeDecodeError, csv.Error) as exc:
                raise FerkitError(f"{path}: not a UTF-8 CSV list of paths ({exc})") from None
            if not rows:
                raise FerkitError(f"{path}: empty list")
            header = [h.strip().lower() for h in rows[0]]
            # a first row naming a `path` column is a header; otherwise it is the first path
            column, body = (header.index("path"), rows[1:]) if "path" in header else (0, rows)
            items = [r[column].strip() for r in body if len(r) > column and r[column].strip()]
        if not items:
            raise FerkitError(f"{path}: lists no image")
        base = path.parent  # relative paths in a list are relative to the list
        return [i if "://" in i or Path(i).is_absolute() else str(base / i) for i in items]
    if any(ch in text for ch in "*?["):
        found = sorted(globbing.glob(text, recursive=True))
        if not found:
            raise FerkitError(f"{text}: the pattern matches no file")
        return found
    if "://" in text:
        return [text]
    raise ArgumentError(f"{text}: not a folder, a glob, or a .csv/.parquet list of images")


def sort_entries(entries: list[str], *, allow_remote: bool = False) -> tuple[list[dict[str, Any]],
                                                                         list[dict[str, Any]]]:
    """The entries to read, each {"index", "file", "path", "remote"}, and the rows of those that cannot
    be read at all (missing, a folder, a remote URI without `allow_remote`), each with its error.
    `index` is the entry's place in the input: rows are written in that order, a repeated entry twice."""
    to_read, failed = [], []
    for index, entry in enumerate(entries):
        path = entry[len("file://"):] if entry.startswith("file://") else entry
        remote = "://" in path
        problem = None
        if remote and not allow_remote:
            problem = f"{entry}: a remote URI; ferkit batch fetches remote files only with --allow-remote"
        elif not remote and Path(path).is_dir():
            problem = f"{entry}: is a folder, not an image file"
        elif not remote and not Path(path).is_file():
            problem = f"{entry}: file not found"
        if problem:
            failed.append({"index": index, "file": entry, "error": problem})
        else:
            to_read.append({"index": index, "file": entry, "path": path, "remote": remote})
    return to_read, failed


def read_entry(path: str, remote: bool, max_bytes: int) -> bytes:
    """The bytes of a local file, or of a remote URI (any fsspec protocol) up to `max_bytes`."""
    if not remote:
        return Path(path).read_bytes()
    import fsspec

    with fsspec.open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{path}: remote file is above the limit of "
                         f"{max_bytes / settings.BYTES_PER_MB:g} MB (--max-remote-mb)")
    return data


class FacePredictor:
    """Ray Data's callable class: one Predictor per actor, loaded once; a batch of entries (columns
    `index`, `file`, `path`, `remote`) -> face rows (PREDICT_COLUMNS + `index`). Each entry is read
    here, so a file that cannot be read becomes a row with its error, never a failed job."""

    def __init__(self, model: str | None = None, detector: str | None = None, prior: str | None = None,
                 threads: int = 1, max_remote_bytes: int = settings.MAX_UPLOAD_MB * settings.BYTES_PER_MB):
        from ferkit.hardware import set_torch_threads
        from ferkit.inference import Predictor

        set_torch_threads(threads)  # one actor per core: no oversubscription
        self.predictor = Predictor(model=model, detector=detector, prior=prior, threads=threads)
        self.max_remote_bytes = max_remote_bytes

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        rows: list[dict[str, Any]] = []
        for index, file, path, remote in zip(batch["index"], batch["file"], batch["path"], batch["remote"],
                                             strict=True):
            try:
                data = read_entry(str(path), bool(remote), self.max_remote_bytes)
            except (OSError, ValueError, FerkitError) as exc:
                text = str(exc) if isinstance(exc, FerkitError) else f"{file}: cannot read ({exc})"
                rows.append({"index": int(index), "file": str(file), "error": text})
                continue
            result = self.predictor.predict_many([data], progress=False, names=[str(file)])
            rows += [{"index": int(index), **row} for row in predict_rows(result)]
        return pa.Table.from_pydict(columns_of(rows), schema=row_schema())


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list]:
    """Rows -> columns with stable types (Arrow needs one type per column; missing = None)."""
    out: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    for row in rows:
        for c in ROW_COLUMNS:
            value = row.get(c)
            out[c].append(None if value is None else COLUMN_TYPES[c](value))
    return out


def run_batch(source: str | Path, out: str | Path, *, address: str | None = None, model: str | None = None,
              detector: str | None = None, prior: str | None = None, batch_size: int = 16,
              actors: int | None = None, allow_remote: bool = False,
              max_remote_mb: float = settings.MAX_UPLOAD_MB) -> BatchReport:
    """Predict every image of SOURCE on Ray Data and write the face rows to OUT (see the module)."""
    import ray

    from ferkit.models.onnx_export import prepare

    prepare(model)  # before Ray starts: the model's errors in one line, its export built once
    files = list_sources(source)
    out = Path(out).expanduser()
    to_read, failed = sort_entries(files, allow_remote=allow_remote)
    if address is None:
        # a local Ray stays on loopback (its default is the machine's network address)
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                 object_store_memory=256 * 1024 * 1024, ignore_reinit_error=True,
                 _node_ip_address="127.0.0.1")
    else:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in input order
        # one actor per CPU, less one left for the reading tasks (with every CPU held by an actor the
        # reads could never be scheduled)
        actors = actors or max(1, int(ray.available_resources().get("CPU", 1)) - 1)
        rows: list[dict[str, Any]] = list(failed)
        if to_read:
            dataset = ray.data.from_items(to_read).map_batches(
                FacePredictor, fn_constructor_kwargs={
                    "model": model, "detector": detector, "prior": prior,
                    "max_remote_bytes": int(max_remote_mb * settings.BYTES_PER_MB)},
                batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1,
                batch_format="numpy")
            if out.suffix.lower() == ".csv":
                try:
                    for row in dataset.iter_rows():
                        rows.append(row)
                except BaseException as exc:  # whatever stopped it, keep what was computed
                    stop = BatchFailed if isinstance(exc, Exception) else BatchStopped
                    raise stop(_write_rows(out, files, rows), exc) from exc
            else:
                dataset.drop_columns(["index"]).write_parquet(str(out))
        if out.suffix.lower() == ".csv":
            report = _write_rows(out, files, rows)
        else:
            report = BatchReport(out=out, files=len(files), done=len(files))
            import pyarrow.parquet as pq

            if failed:  # rows for the entries that could not be read at all, beside the workers' files
                import pyarrow as pa

                out.mkdir(parents=True, exist_ok=True)
                pq.write_table(pa.Table.from_pydict(columns_of(failed), schema=row_schema()).drop(["index"]),
                               out / "unread-files.parquet")
            table = pq.read_table(out)
            report.rows = table.num_rows
            report.failed = [e for e in table.column("error").to_pylist() if e]
        return report
    finally:
        if address is None:
            ray.shutdown()


def _write_rows(out: Path, files: list[str], rows: list[dict[str, Any]]) -> BatchReport:
    """Write the face rows to the CSV `out` in input order (faces in order within a file)."""
    from ferkit.inference.rows import CsvWriter

    rows = sorted(rows, key=lambda r: (r["index"], r.get("face") or 0))  # input order, then face order
    with CsvWriter(out, PREDICT_COLUMNS) as writer:
        for row in rows:
            writer.write({k: v for k, v in row.items() if v is not None})
    return BatchReport(out=out, files=len(files), rows=len(rows), done=len({r["index"] for r in rows}),
                       failed=[r["error"] for r in rows if r.get("error")])
