"""utils.file_io: the atomic writer, and the one PathManager every reader goes through."""

import json
import os
import threading

import cv2
import numpy as np
import pytest
import torch
from iopath.common.file_io import HTTPURLHandler

from mask2former.checkpoint import DetectionCheckpointer, read_checkpoint, save_weights
from mask2former.data.detection_utils import read_image
from mask2former.utils.file_io import (
    Detectron2Handler,
    PathManager,
    atomic_directory,
    atomic_write,
    load_json,
    save_json,
)


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


def test_atomic_directory_replaces_the_folder_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out" / "pngs"
    old_umask = os.umask(0o027)
    try:
        with atomic_directory(str(final)) as tmp:
            (tmp_path / "out" / "x").write_text("")  # the parent was created
            open(os.path.join(tmp, "a.png"), "w").write("1")
            assert not final.exists()
    finally:
        os.umask(old_umask)
    assert sorted(p.name for p in final.iterdir()) == ["a.png"]
    assert final.stat().st_mode & 0o777 == 0o750  # as os.makedirs gives (mkdtemp: 0o700)
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_directory(str(final)) as tmp:
            open(os.path.join(tmp, "b.png"), "w").write("2")
            raise RuntimeError("failed half-way")
    assert sorted(p.name for p in final.iterdir()) == ["a.png"]  # as it was
    with atomic_directory(str(final)) as tmp:
        open(os.path.join(tmp, "c.png"), "w").write("3")
    assert sorted(p.name for p in final.iterdir()) == ["c.png"]  # replaced, not merged
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pngs", "x"]  # no temporary


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


# --------------------------------------------------------------------------- #
# The package's PathManager and its detectron2:// handler
# --------------------------------------------------------------------------- #
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    """http(s) downloads served from ``tmp_path / "server"``; records the URLs asked for."""
    root = tmp_path / "server"
    root.mkdir()
    asked = []

    def local_copy(url):
        asked.append(url)
        assert url.startswith(D2_URL), url
        return str(root / url[len(D2_URL) :])

    monkeypatch.setattr(
        HTTPURLHandler, "_get_local_path", lambda self, path, **kw: local_copy(path)
    )
    monkeypatch.setattr(
        HTTPURLHandler, "_open", lambda self, path, mode="r", **kw: open(local_copy(path), mode)
    )
    return root, asked


def test_detectron2_prefix_resolves_to_detectron2_file_server(fake_server):
    root, asked = fake_server
    (root / "ImageNetPretrained").mkdir()
    (root / "ImageNetPretrained" / "R-50.txt").write_text("weights")
    local = PathManager.get_local_path("detectron2://ImageNetPretrained/R-50.txt")
    assert local == str(root / "ImageNetPretrained" / "R-50.txt")
    with PathManager.open("detectron2://ImageNetPretrained/R-50.txt") as f:
        assert f.read() == "weights"
    assert asked == [D2_URL + "ImageNetPretrained/R-50.txt"] * 2


def test_the_handler_is_registered_once_and_the_checkpointer_uses_this_manager():
    handler = PathManager._path_handlers["detectron2://"]
    assert isinstance(handler, Detectron2Handler)
    checkpointers = [DetectionCheckpointer(torch.nn.Linear(1, 1)) for _ in range(2)]
    assert all(c.path_manager is PathManager for c in checkpointers)
    assert PathManager._path_handlers["detectron2://"] is handler


def test_readers_resolve_detectron2_urls(fake_server):
    root, asked = fake_server
    save_weights({"w": torch.ones(2)}, str(root / "model.pth"))
    assert read_checkpoint("detectron2://model.pth")["model"]["w"].tolist() == [1.0, 1.0]
    (root / "ann.json").write_text('{"images": []}')
    assert load_json("detectron2://ann.json") == {"images": []}
    cv2.imwrite(str(root / "image.png"), np.full((4, 6, 3), 7, np.uint8))
    assert read_image("detectron2://image.png", "BGR").shape == (4, 6, 3)
    model = torch.nn.Linear(2, 1)
    save_weights(
        {k: torch.zeros_like(v) for k, v in model.state_dict().items()}, str(root / "m.pth")
    )
    DetectionCheckpointer(model).load("detectron2://m.pth")
    assert model.weight.abs().sum() == 0
    assert [u[len(D2_URL) :] for u in asked] == ["model.pth", "ann.json", "image.png", "m.pth"]


def test_missing_checkpoint_names_the_url_and_the_download(fake_server):
    with pytest.raises(FileNotFoundError, match=r"detectron2://gone\.pth \(fetched to .*gone\.pth"):
        read_checkpoint("detectron2://gone.pth")


def test_atomic_write_gives_a_plain_files_permissions(tmp_path):
    import os
    import stat

    from mask2former.utils.file_io import atomic_write

    old = os.umask(0o027)
    try:
        with atomic_write(str(tmp_path / "a.bin")) as f:
            f.write(b"x")
        with open(tmp_path / "b.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode_a = stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode)
    assert mode_a == stat.S_IMODE(os.stat(tmp_path / "b.bin").st_mode) == 0o640


def test_atomic_write_temporaries_names_the_files_of_writes_not_finished(tmp_path):
    from mask2former.utils.file_io import atomic_write_temporaries

    (tmp_path / "model.pth").write_bytes(b"done")
    (tmp_path / ".model.pth.tmp").write_bytes(b"someone else's")
    with atomic_write(str(tmp_path / "model.pth")) as f, atomic_write(str(tmp_path / "a.b.c")):
        f.write(b"x")
        temporaries = atomic_write_temporaries(str(tmp_path))
        # this is what a write killed now would leave behind
        assert sorted(temporaries.values()) == ["a.b.c", "model.pth"]
        assert all(os.path.isfile(tmp_path / name) for name in temporaries)
    assert atomic_write_temporaries(str(tmp_path)) == {}
    assert atomic_write_temporaries(str(tmp_path / "absent")) == {}


def test_save_json_writes_what_json_dump_writes(tmp_path):
    data = [
        {"image_id": 3, "score": 0.1 + 0.2, "segmentation": {"size": [480, 640], "counts": "a\\b"}},
        {"name": "caf\u00e9", "nan": float("nan"), "nested": [[1, 2.5e-300], {"k": None}]},
    ]
    path = tmp_path / "results.json"
    save_json(data, str(path))
    assert path.read_text() == json.dumps(data)
    with open(tmp_path / "streamed.json", "w") as f:
        json.dump(data, f)
    assert path.read_text() == (tmp_path / "streamed.json").read_text()
