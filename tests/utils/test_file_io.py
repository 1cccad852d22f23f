"""utils.file_io: the atomic writer and JSON saver every writer of the package uses."""

import json
import os
import threading

import pytest

from mask2former.utils.file_io import atomic_write, save_json


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with atomic_write(str(path), "w") as f:
        f.write("new")
        # while writing, the final name still holds the old content
        assert path.read_text() == "old"
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.json"]


def test_atomic_write_temporary_names_are_unique(tmp_path):
    path = str(tmp_path / "out.bin")
    with atomic_write(path) as a, atomic_write(path) as b:
        # two writers of one file never share a temporary; it is in the same folder, where
        # os.replace is atomic
        temporaries = os.listdir(tmp_path)
        assert len(temporaries) == 2
        assert all(t.startswith(".out.bin.") and t.endswith(".tmp") for t in temporaries)
        a.write(b"a")
        b.write(b"b")
    assert open(path, "rb").read() in (b"a", b"b")
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_write_error_leaves_no_partial_file(tmp_path):
    path = tmp_path / "new.bin"
    with pytest.raises(RuntimeError), atomic_write(str(path)) as f:
        f.write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []  # neither the final name nor a temporary


def test_atomic_write_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"), atomic_write(str(tmp_path / "x"), "a"):
        pass


def test_save_json_creates_the_folder_and_concurrent_savers_do_not_collide(tmp_path):
    path = tmp_path / "sub" / "results.json"
    errors = []

    def save(value):
        try:
            for _ in range(20):
                save_json({"value": value}, str(path))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert json.loads(path.read_text())["value"] in range(4)
    assert os.listdir(path.parent) == ["results.json"]
