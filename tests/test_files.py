"""write_whole: a write cut short leaves the previous file as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferkit.files import write_whole


def test_a_write_cut_short_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "model.safetensors"
    write_whole(target, b"old weights")
    assert target.read_bytes() == b"old weights"

    def killed_half_way(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_bytes", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        write_whole(target, b"new weights, longer")
    assert target.read_bytes() == b"old weights"
    monkeypatch.undo()
    write_whole(target, "text too\n")
    assert target.read_text() == "text too\n"
