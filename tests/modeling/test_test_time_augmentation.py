"""Semantic TTA: sizes, flips and averaging, with a stub model whose output is known."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mask2former.config import get_cfg
from mask2former.modeling import SemanticSegmentorWithTTA
from mask2former.modeling.test_time_augmentation import shortest_edge_size
from tests.modeling.tiny import build_tiny_model, make_image


class EchoModel(nn.Module):
    """Returns the input's first channel plus its shorter side, resized to (height, width)."""

    def __init__(self):
        super().__init__()
        self.seen_sizes = []

    def forward(self, batched_inputs):
        results = []
        for x in batched_inputs:
            image = x["image"]
            self.seen_sizes.append(tuple(image.shape[-2:]))
            sem_seg = image[:1] + min(image.shape[-2:])
            size = (x["height"], x["width"])
            sem_seg = F.interpolate(sem_seg[None], size=size, mode="bilinear", align_corners=False)
            results.append({"sem_seg": sem_seg[0]})
        return results


@pytest.mark.parametrize(
    "size, short, max_size, expected",
    [
        ((480, 640), 512, 3584, (512, 683)),
        ((100, 1000), 200, 1000, (100, 1000)),
        ((64, 32), 16, 99, (32, 16)),
    ],
)
def test_shortest_edge_size(size, short, max_size, expected):
    assert shortest_edge_size(*size, short, max_size) == expected


def test_sizes_flips_and_average():
    model = EchoModel()
    tta = SemanticSegmentorWithTTA(model, min_sizes=[32, 64], max_size=1000, flip=True)
    image = torch.arange(64 * 96, dtype=torch.float32).view(1, 64, 96).repeat(3, 1, 1)
    (out,) = tta([{"image": image, "height": 64, "width": 96}])
    assert model.seen_sizes == [(32, 48), (32, 48), (64, 96), (64, 96)]
    # Flipped predictions are flipped back, so the image content averages to itself;
    # the added shorter sides average to (32 + 64) / 2.
    small = F.interpolate(
        F.interpolate(image[None, :1], size=(32, 48), mode="bilinear"),
        size=(64, 96),
        mode="bilinear",
    )[0]
    expected = (small + image[:1]) / 2 + 48
    torch.testing.assert_close(out["sem_seg"], expected, atol=1e-3, rtol=1e-5)


def test_single_scale_without_flip_is_the_model():
    model = build_tiny_model("mask2former")
    cfg = get_cfg()
    cfg.merge_from_list(
        ["TEST.AUG.MIN_SIZES", (64,), "TEST.AUG.MAX_SIZE", 128, "TEST.AUG.FLIP", False]
    )
    tta = SemanticSegmentorWithTTA(cfg, model)
    x = {"image": make_image(64, 80), "height": 64, "width": 80}
    with torch.no_grad():
        expected = model([x])[0]["sem_seg"]
    torch.testing.assert_close(tta([x])[0]["sem_seg"], expected)
