import numpy as np
import torch

from mask2former.data.catalog import Metadata
from mask2former.structures import Instances
from mask2former.utils.visualizer import Visualizer, draw_predictions


def _metadata() -> Metadata:
    return Metadata(
        name="vis_test",
        thing_classes=["disc", "square"],
        thing_colors=[(220, 20, 60), (0, 80, 200)],
        stuff_classes=["disc", "square", "sky"],
        stuff_colors=[(220, 20, 60), (0, 80, 200), (70, 130, 180)],
        ignore_label=255,
    )


def _interior(mask: np.ndarray, margin: int = 3) -> np.ndarray:
    """Pixels of ``mask`` at least ``margin`` pixels from its border (no outline there)."""
    import cv2

    kernel = np.ones((2 * margin + 1,) * 2, np.uint8)
    return (
        cv2.erode(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    )


def test_panoptic_segments_are_filled_with_metadata_colours():
    image = np.zeros((64, 96, 3), np.uint8)
    ids = np.zeros((64, 96), np.int32)
    ids[:, 48:] = 1  # sky (stuff 2)
    ids[10:40, 5:35] = 2  # square (thing 1)
    segments = [
        {"id": 1, "category_id": 2, "isthing": False},
        {"id": 2, "category_id": 1, "isthing": True},
    ]
    vis = Visualizer(image, _metadata(), alpha=1.0)
    vis.draw_panoptic_seg(torch.from_numpy(ids), segments)
    out = vis.canvas  # fills and outlines, before labels
    sky = _interior(ids == 1)
    square = _interior(ids == 2)
    assert (out[sky] == (70, 130, 180)).all()
    assert (out[square] == (0, 80, 200)).all()
    void_interior = _interior(ids == 0)
    assert (out[void_interior] == 0).all()


def test_alpha_blends_towards_class_colour():
    image = np.full((32, 32, 3), 100, np.uint8)
    labels = np.full((32, 32), 255, np.int64)
    labels[4:28, 4:28] = 2
    vis = Visualizer(image, _metadata(), alpha=0.5)
    vis.draw_sem_seg(labels)
    inside = vis.canvas[_interior(labels == 2)]
    expected = np.round((100 + np.array([70, 130, 180])) / 2)
    assert np.abs(inside.astype(int) - expected).max() <= 1
    # the ignore label is not drawn
    assert (vis.canvas[_interior(labels == 255, margin=1)] == 100).all()


def test_semantic_scores_are_argmaxed_and_labels_written():
    scores = torch.zeros(3, 40, 40)
    scores[0, :, :20] = 1
    scores[2, :, 20:] = 1
    image = np.zeros((40, 40, 3), np.uint8)
    vis = Visualizer(image, _metadata(), alpha=1.0)
    vis.draw_sem_seg(scores)
    left = np.zeros((40, 40), bool)
    left[:, :20] = True
    assert (vis.canvas[_interior(left)] == (220, 20, 60)).all()
    labelled = vis.get_output()
    assert (labelled != vis.canvas).any(), "class names must be drawn over the fills"


def test_instances_below_threshold_are_not_drawn():
    masks = torch.zeros(2, 50, 50, dtype=torch.bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 30:45, 30:45] = True
    instances = Instances(
        (50, 50),
        pred_masks=masks,
        scores=torch.tensor([0.9, 0.2]),
        pred_classes=torch.tensor([0, 1]),
    )
    image = np.zeros((50, 50, 3), np.uint8)
    out = draw_predictions(image, {"instances": instances}, _metadata(), confidence_threshold=0.5)
    assert out[12, 12].any(), "the confident instance is drawn"
    assert not out[_interior(masks[1].numpy())].any(), "the low-score instance is not"


def test_rejects_non_rgb_uint8():
    import pytest

    with pytest.raises(ValueError, match="uint8 RGB"):
        Visualizer(np.zeros((4, 4), np.float32))
