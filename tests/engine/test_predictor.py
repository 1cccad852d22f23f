"""DefaultPredictor: detectron2's semantics (BGR arrays, test-time resize, outputs at the
original size), same outputs as the model on the same preprocessed input for every input kind."""

import numpy as np
import pytest
import torch
from PIL import Image

from mask2former.checkpoint import save_weights
from mask2former.engine.defaults import DefaultPredictor
from tests.modeling.tiny import tiny_cfg


def _cfg(**extra):
    cfg = tiny_cfg("mask2former", **extra)
    cfg.MODEL.WEIGHTS = ""  # random init: nothing to download
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.INPUT.MAX_SIZE_TEST = 128
    return cfg


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return DefaultPredictor(_cfg())


def _image(h=48, w=72, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _assert_same_outputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    torch.testing.assert_close(a["sem_seg"], b["sem_seg"], rtol=0, atol=0)
    torch.testing.assert_close(a["panoptic_seg"][0], b["panoptic_seg"][0], rtol=0, atol=0)
    assert a["panoptic_seg"][1] == b["panoptic_seg"][1]
    torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=0, atol=0)


def test_equals_model_on_the_same_preprocessed_input(predictor):
    image = _image()
    inputs = predictor.preprocess(image)
    # shortest edge 48 -> MIN_SIZE_TEST 64: 48x72 becomes 64x96
    assert tuple(inputs["image"].shape) == (3, 64, 96)
    assert (inputs["height"], inputs["width"]) == (48, 72)
    with torch.no_grad():
        direct = predictor.model([inputs])[0]
    out = predictor(image)
    _assert_same_outputs(out, direct)
    assert out["sem_seg"].shape[-2:] == (48, 72), "outputs come back at the original size"


def test_path_pil_and_bgr_array_inputs_agree(predictor, tmp_path):
    rgb = _image(seed=1)
    path = tmp_path / "image.png"
    Image.fromarray(rgb).save(path)
    bgr = rgb[:, :, ::-1].copy()
    assert predictor.input_format == "RGB"  # the tiny config: arrays are flipped for the model
    as_array = predictor(bgr)
    _assert_same_outputs(as_array, predictor(str(path)))
    _assert_same_outputs(as_array, predictor(Image.fromarray(rgb)))
    inputs = predictor.preprocess(bgr)
    assert inputs["image"].dtype == torch.float32
    # the model sees RGB: channel 0 of its input is the array's last (red) channel, resized
    resized_red = predictor.aug.get_transform(rgb).apply_image(rgb)[:, :, 0]
    torch.testing.assert_close(inputs["image"][0], torch.from_numpy(resized_red).float())


def test_bgr_model_gets_the_array_unflipped():
    torch.manual_seed(0)
    cfg = _cfg()
    cfg.INPUT.FORMAT = "BGR"
    bgr_predictor = DefaultPredictor(cfg)
    bgr = _image(seed=5)
    inputs = bgr_predictor.preprocess(bgr)
    resized = bgr_predictor.aug.get_transform(bgr).apply_image(bgr)
    torch.testing.assert_close(inputs["image"], torch.from_numpy(resized).permute(2, 0, 1).float())


def test_resize_is_detectron2s_shortest_edge_with_max_size(predictor):
    # MIN_SIZE_TEST 64, MAX_SIZE_TEST 128: 40x200 would become 64x320, capped to 26x128
    inputs = predictor.preprocess(_image(h=40, w=200))
    assert tuple(inputs["image"].shape) == (3, 26, 128)
    assert (inputs["height"], inputs["width"]) == (40, 200)
    assert tuple(predictor.aug.short_edge_length) == (64, 64) and predictor.aug.max_size == 128


def test_batch_equals_single_calls(predictor):
    images = [_image(seed=2), _image(seed=3)]
    batch = predictor.predict_batch(images)
    for image, out in zip(images, batch):
        single = predictor(image)
        # batched matrix products sum in another order: equal to float32 rounding (1e-5)
        torch.testing.assert_close(out["sem_seg"], single["sem_seg"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            out["instances"].scores, single["instances"].scores, rtol=1e-5, atol=1e-5
        )
        assert len(out["panoptic_seg"][1]) == len(single["panoptic_seg"][1])


def test_weights_are_loaded_from_model_weights(tmp_path):
    torch.manual_seed(1)
    source = DefaultPredictor(_cfg())
    weights = tmp_path / "model.pth"
    save_weights(source.model.state_dict(), str(weights))
    torch.manual_seed(2)  # a different random init, overwritten by the checkpoint
    cfg = _cfg()
    cfg.MODEL.WEIGHTS = str(weights)
    loaded = DefaultPredictor(cfg)
    image = _image(seed=4)
    _assert_same_outputs(source(image), loaded(image))


def test_bad_inputs_are_named(predictor, tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="path, a BGR numpy array or a PIL image"):
        predictor(42)
    with pytest.raises(Exception, match="missing.png"):
        predictor(str(tmp_path / "missing.png"))


def test_low_memory_predictor_gives_the_same_outputs(predictor):
    """``low_memory=True`` (the demo's): same outputs, instance masks as bool."""
    torch.manual_seed(0)
    low_memory = DefaultPredictor(_cfg(), low_memory=True)  # the fixture's weights
    assert low_memory.model.low_memory_inference and not predictor.model.low_memory_inference
    image = _image(h=120, w=160, seed=6)  # outputs 120x160: computed band by band
    got, want = low_memory(image), predictor(image)
    _assert_same_outputs(got, want)
    assert got["instances"].pred_masks.dtype == torch.bool
    assert torch.equal(got["instances"].pred_masks, want["instances"].pred_masks.bool())
