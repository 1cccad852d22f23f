"""demo/demo.py writes a PNG whose segments carry the metadata's colours."""

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch

from mask2former.engine import DefaultPredictor
from tests.modeling.tiny import CONFIG_DIR, CONFIGS, TINY_OVERRIDES

REPO = Path(__file__).resolve().parents[2]


def _load_demo():
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
    _load_demo().main(
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
    import pytest

    from mask2former.engine.demo import expand_inputs, output_path

    (tmp_path / "a.png").write_bytes(b"")
    assert expand_inputs([str(tmp_path / "*.png")]) == [str(tmp_path / "a.png")]
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        expand_inputs([str(tmp_path / "nothing-here*.jpg")])
    # several inputs always go into a directory, one PNG each
    assert output_path(str(tmp_path / "out"), "/x/img.jpg", 2) == str(tmp_path / "out" / "img.png")
    assert output_path(str(tmp_path / "one.png"), "/x/img.jpg", 1) == str(tmp_path / "one.png")


def test_demo_refuses_both_or_neither_input():
    import pytest

    demo = _load_demo()
    with pytest.raises(SystemExit):
        demo.parse_args(["--config-file", "x.yaml", "--output", "o"])
    with pytest.raises(SystemExit):
        demo.parse_args(
            ["--config-file", "x.yaml", "--input", "a", "--video-input", "v", "--output", "o"]
        )
