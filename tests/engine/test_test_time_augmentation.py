"""Semantic TTA as published: each scale re-resizes the test-mapped image (PIL bilinear),
flipped copies are flipped back, the model's "sem_seg" are averaged in order."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from mask2former.config import get_cfg
from mask2former.engine import SemanticSegmentorWithTTA
from tests.modeling.tiny import build_tiny_model, make_image


class EchoModel(nn.Module):
    """Returns the input's first channel plus its shorter side, resized to (height, width)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, batched_inputs):
        assert len(batched_inputs) == 1  # the copies run one at a time
        x = batched_inputs[0]
        image = x["image"].float()
        self.seen.append(x["image"])
        sem_seg = image[:1] + min(image.shape[-2:])
        size = (x["height"], x["width"])
        sem_seg = F.interpolate(sem_seg[None], size=size, mode="bilinear", align_corners=False)
        return [{"sem_seg": sem_seg[0]}]


def tta_cfg(min_sizes, flip=True, max_size=1000):
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "TEST.AUG.MIN_SIZES",
            tuple(min_sizes),
            "TEST.AUG.MAX_SIZE",
            max_size,
            "TEST.AUG.FLIP",
            flip,
        ]
    )
    return cfg


def test_sizes_flips_and_average():
    model = EchoModel()
    tta = SemanticSegmentorWithTTA(tta_cfg([32, 64]), model)
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (48, 72, 3), dtype=np.uint8)  # the test mapper's output
    image = torch.from_numpy(hwc).permute(2, 0, 1)
    (out,) = tta([{"image": image, "height": 96, "width": 144}])
    assert [tuple(x.shape[-2:]) for x in model.seen] == [(32, 48), (32, 48), (64, 96), (64, 96)]
    # each copy: PIL bilinear of the (already resized) image; the flipped ones mirrored
    expected_inputs = []
    for h, w in ((32, 48), (64, 96)):
        resized = np.asarray(Image.fromarray(hwc).resize((w, h), Image.BILINEAR))
        expected_inputs += [resized, resized[:, ::-1]]
    for seen, expected in zip(model.seen, expected_inputs):
        assert np.array_equal(seen.permute(1, 2, 0).numpy(), expected)
    # flipped predictions are flipped back: the average of the four, in order
    total = None
    for seen, flipped in zip(model.seen, (False, True, False, True)):
        pred = seen[None, :1].float() + min(seen.shape[-2:])
        pred = F.interpolate(pred, size=(96, 144), mode="bilinear", align_corners=False)[0]
        pred = pred.flip(dims=[2]) if flipped else pred
        total = pred if total is None else total + pred
    torch.testing.assert_close(out["sem_seg"], total / 4, rtol=0, atol=0)


def test_single_scale_without_flip_is_the_model():
    model = build_tiny_model("mask2former")
    tta = SemanticSegmentorWithTTA(tta_cfg([64], flip=False, max_size=128), model)
    x = {"image": make_image(64, 80), "height": 64, "width": 80}
    with torch.no_grad():
        expected = model([x])[0]["sem_seg"]
    torch.testing.assert_close(tta([x])[0]["sem_seg"], expected, rtol=0, atol=0)


def test_reads_the_image_when_missing_and_checks_batch_size(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    model = EchoModel()
    cfg = tta_cfg([20], flip=False)
    cfg.INPUT.FORMAT = "BGR"
    (out,) = SemanticSegmentorWithTTA(cfg, model)([{"file_name": str(tmp_path / "a.png")}])
    assert out["sem_seg"].shape == (1, 20, 30)
    assert np.array_equal(model.seen[0].permute(1, 2, 0).numpy(), rgb[:, :, ::-1])
    with pytest.raises(ValueError, match="batch_size=2"):
        SemanticSegmentorWithTTA(cfg, model, batch_size=2)
