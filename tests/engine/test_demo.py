"""demo/demo.py writes a PNG whose segments carry the metadata's colours, creates missing
output directories, refuses unusable output names before building the model, and draws the
same with its low-memory inference as without."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mask2former.engine import DefaultPredictor
from tests.modeling.tiny import CONFIG_DIR, CONFIGS, TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]


def load_demo():
    """demo/demo.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "demo" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _opts(weights: str) -> list[str]:
    opts = [str(x) for kv in TINY_OVERRIDES.items() for x in kv]
    opts += ["MODEL.MASK_FORMER.DEC_LAYERS", "3", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES", "8"]
    opts += ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128", "MODEL.WEIGHTS", weights]
    return opts


def test_demo_writes_png_with_metadata_colours(tmp_path):
    from mask2former.checkpoint import save_weights
    from mask2former.config import get_cfg

    config = str(CONFIG_DIR / CONFIGS["mask2former"])
    cfg = get_cfg()
    cfg.merge_from_file(config)
    torch.manual_seed(0)
    cfg.merge_from_list(_opts(""))
    predictor = DefaultPredictor(cfg)
    weights = str(tmp_path / "w.pth")
    save_weights(predictor.model.state_dict(), weights)

    # uniform: a drawn pixel is 0.3 * 128 + 0.7 * colour (panoptic segments are drawn with
    # detectron2's alpha 0.7)
    gray = np.full((64, 80, 3), 128, np.uint8)
    image_path = tmp_path / "in.png"
    cv2.imwrite(str(image_path), gray)
    out_dir = tmp_path / "out"
    load_demo().main(
        ["--config-file", config, "--input", str(image_path), "--output", str(out_dir) + "/"]
        + ["--opts"]
        + _opts(weights)
    )
    drawing = cv2.imread(str(out_dir / "in.png"))[:, :, ::-1]
    assert drawing.shape == (64, 80, 3)

    panoptic, segments = predictor(gray)["panoptic_seg"]
    assert segments, "the tiny model with thresholds 0 predicts at least one segment"
    metadata = predictor.metadata
    checked = 0
    for info in segments:
        mask = (panoptic == info["id"]).numpy().astype(np.uint8)
        interior = cv2.erode(mask, np.ones((5, 5), np.uint8), borderValue=0) > 0
        if interior.sum() < 20:
            continue
        key = "thing_colors" if info["isthing"] else "stuff_colors"
        colour = np.array(getattr(metadata, key)[info["category_id"]])
        expected = np.round(0.3 * 128 + 0.7 * colour)
        pixels = drawing[interior].astype(int)
        # labels are drawn on top of the fill and cover part of a small segment's interior;
        # every other interior pixel is the fill colour (±1). A wrong colour matches ~none.
        matching = (np.abs(pixels - expected).max(axis=1) <= 1).mean()
        assert matching > 0.6, (info, matching)
        checked += 1
    assert checked >= 1


def test_demo_inputs_that_match_nothing_are_named(tmp_path):
    from mask2former.engine.demo import expand_inputs, output_path

    (tmp_path / "a.png").write_bytes(b"")
    assert expand_inputs([str(tmp_path / "*.png")]) == [str(tmp_path / "a.png")]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_inputs([str(tmp_path / "nothing-here*.jpg")])
    # several inputs always go into a directory, one PNG each
    assert output_path(str(tmp_path / "out"), "/x/img.jpg", 2) == str(tmp_path / "out" / "img.png")
    assert output_path(str(tmp_path / "one.png"), "/x/img.jpg", 1) == str(tmp_path / "one.png")


def test_demo_refuses_both_or_neither_input():
    demo = load_demo()
    with pytest.raises(SystemExit):
        demo.parse_args(["--config-file", "x.yaml", "--output", "o"])
    with pytest.raises(SystemExit):
        demo.parse_args(
            ["--config-file", "x.yaml", "--input", "a", "--video-input", "v", "--output", "o"]
        )


# Output paths: created when missing, refused before the model is built when unusable.

TINY_CONFIG = str(CONFIG_DIR / CONFIGS["mask2former"])


def _run_demo(inputs: list[str], output, *extra: str, demo=None):
    demo = demo or load_demo()
    flag = "--input" if not str(inputs[0]).endswith(".avi") else "--video-input"
    args = ["--config-file", TINY_CONFIG, flag, *map(str, inputs), "--output", str(output)]
    demo.main(args + list(extra) + ["--opts"] + _opts(""))


def _image_file(tmp_path, name="in.png", size=(48, 64)) -> str:
    path = tmp_path / name
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return str(path)


def _video_file(tmp_path, frames=3, size=(48, 64)) -> str:
    """A tiny MJPG video written with cv2.VideoWriter."""
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 5.0, size[::-1])
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((*size, 3), 40 * i, np.uint8))
    writer.release()
    return path


def _frames(path) -> list[np.ndarray]:
    capture, frames = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _demo_that_must_not_build_a_model():
    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the output was checked")

    demo = load_demo()
    demo.DefaultPredictor = refuse
    return demo


def test_image_output_in_missing_directories_is_written(tmp_path):
    target = tmp_path / "a" / "b" / "out.png"
    _run_demo([_image_file(tmp_path)], target)
    assert cv2.imread(str(target)).shape == (48, 64, 3)


@pytest.mark.parametrize("name", ["p/noext", "out.xyz", "p/out.mp4"])
def test_image_output_without_an_image_format_is_refused_before_inference(tmp_path, name):
    with pytest.raises(ValueError, match=f"--output '{tmp_path / name}'"):
        _run_demo(
            [_image_file(tmp_path)], tmp_path / name, demo=_demo_that_must_not_build_a_model()
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]  # nothing created


@pytest.mark.parametrize("output", ["missing/dir/out.mp4", "missing/dir/out.avi"])
def test_video_output_in_missing_directories_is_written(tmp_path, output):
    _run_demo([_video_file(tmp_path)], tmp_path / output)
    frames = _frames(tmp_path / output)
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)


@pytest.mark.parametrize("directory", ["new/", "existing"])
def test_video_output_directory_receives_the_video_stem_as_mp4(tmp_path, directory):
    (tmp_path / "existing").mkdir()
    output = str(tmp_path / directory.rstrip("/")) + ("/" if directory.endswith("/") else "")
    _run_demo([_video_file(tmp_path)], output)
    written = tmp_path / directory.rstrip("/") / "clip.mp4"
    assert len(_frames(written)) == 3


@pytest.mark.parametrize("name", ["out", "out.png", "out.xyz"])
def test_video_output_without_a_video_extension_is_refused_before_inference(tmp_path, name):
    video = _video_file(tmp_path)
    with pytest.raises(ValueError, match=f"--output '{tmp_path / name}'.*\\.mp4"):
        _run_demo([video], tmp_path / name, demo=_demo_that_must_not_build_a_model())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_a_video_writer_that_does_not_open_is_an_error_naming_the_file(tmp_path):
    from mask2former.engine.demo import open_video_writer

    target = str(tmp_path / "no-such-dir" / "out.mp4")  # nothing creates the directory here
    with pytest.raises(OSError, match="no-such-dir/out.mp4"):
        open_video_writer(target, 5.0, (64, 48))


def test_write_rgb_says_why_it_cannot_write(tmp_path):
    from mask2former.engine.demo import write_rgb

    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="no directory .*missing"):
        write_rgb(str(tmp_path / "missing" / "out.png"), image)
    with pytest.raises(ValueError, match="no image format"):
        write_rgb(str(tmp_path / "out"), image)


def test_low_memory_drawing_equals_the_straightforward_one(tmp_path):
    image = _image_file(tmp_path, size=(150, 260))  # outputs 150x260: drawn band by band
    torch.manual_seed(0)  # the same random weights for both runs
    _run_demo([image], tmp_path / "low.png")
    torch.manual_seed(0)
    _run_demo([image], tmp_path / "full.png", "--no-low-memory")
    low, full = (cv2.imread(str(tmp_path / name)) for name in ("low.png", "full.png"))
    assert low.shape == (150, 260, 3) and np.array_equal(low, full)
    assert not np.array_equal(low, cv2.imread(image)), "segments are drawn"
