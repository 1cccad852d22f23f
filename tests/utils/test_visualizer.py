import cv2
import numpy as np
import pytest
import torch

from mask2former.data.catalog import Metadata
from mask2former.structures import Instances
from mask2former.utils.video_visualizer import VideoVisualizer
from mask2former.utils.visualizer import ColorMode, VisImage, Visualizer, draw_predictions


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
    vis = Visualizer(image, _metadata())
    vis.draw_panoptic_seg(torch.from_numpy(ids), segments, alpha=1.0)
    out = vis.output.canvas  # fills and outlines, before labels
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
    vis = Visualizer(image, _metadata())
    vis.draw_sem_seg(labels, alpha=0.5)
    inside = vis.output.canvas[_interior(labels == 2)]
    expected = np.round((100 + np.array([70, 130, 180])) / 2)
    assert np.abs(inside.astype(int) - expected).max() <= 1
    # the ignore label is not drawn
    assert (vis.output.canvas[_interior(labels == 255, margin=1)] == 100).all()


def test_semantic_scores_are_argmaxed_and_labels_written():
    scores = torch.zeros(3, 40, 40)
    scores[0, :, :20] = 1
    scores[2, :, 20:] = 1
    image = np.zeros((40, 40, 3), np.uint8)
    vis = Visualizer(image, _metadata())
    vis_image = vis.draw_sem_seg(scores, alpha=1.0)
    left = np.zeros((40, 40), bool)
    left[:, :20] = True
    assert (vis_image.canvas[_interior(left)] == (220, 20, 60)).all()
    labelled = vis_image.get_image()
    assert (labelled != vis_image.canvas).any(), "class names must be drawn over the fills"


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


def test_rejects_non_rgb_and_clips_float_images():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) RGB image, got \(4, 4\)"):
        Visualizer(np.zeros((4, 4), np.float32))
    vis = Visualizer(np.full((4, 4, 3), 300.0))  # detectron2 clips float images to 0..255
    assert vis.img.dtype == np.uint8 and (vis.img == 255).all()


def _two_squares() -> Instances:
    masks = torch.zeros(2, 50, 50, dtype=torch.bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 30:45, 30:45] = True
    return Instances(
        (50, 50),
        pred_masks=masks,
        scores=torch.tensor([0.9, 0.8]),
        pred_classes=torch.tensor([0, 1]),
    )


def test_draw_calls_accumulate_on_one_vis_image_and_save_writes_it(tmp_path):
    """detectron2's pattern: draw_sem_seg then draw_instance_predictions on one Visualizer;
    each returns the same VisImage, whose get_image() is RGB and whose save() writes it."""
    image = np.full((50, 50, 3), 100, np.uint8)
    labels = np.full((50, 50), 2)  # all "sky"
    vis = Visualizer(image, _metadata(), instance_mode=ColorMode.SEGMENTATION)
    first = vis.draw_sem_seg(torch.from_numpy(labels))
    second = vis.draw_instance_predictions(_two_squares())
    assert isinstance(first, VisImage) and first is second
    out = second.get_image()
    assert out.shape == (50, 50, 3) and out.dtype == np.uint8
    sky_only = np.round(0.2 * 100 + 0.8 * np.array([70, 130, 180]))  # sem_seg alpha 0.8
    assert np.abs(out[48, 25].astype(int) - sky_only).max() <= 1  # outside both squares
    assert np.abs(out[12, 12].astype(int) - sky_only).max() > 10  # square drawn over the sky
    path = tmp_path / "drawing.png"
    second.save(str(path))
    np.testing.assert_array_equal(cv2.imread(str(path))[:, :, ::-1], out)


def test_scale_resizes_the_output_and_area_threshold_skips_small_segments():
    labels = np.zeros((20, 40), np.int64)
    labels[:2, :2] = 1  # 4 pixels of class 1
    vis = Visualizer(np.zeros((20, 40, 3), np.uint8), _metadata(), scale=2.0)
    out = vis.draw_sem_seg(labels, area_threshold=5, alpha=1.0)
    assert out.get_image().shape == (40, 80, 3)
    assert (out.canvas[:2, :2] == 0).all(), "class 1 (4 pixels) is below the threshold"
    assert (out.canvas[10, 20] == (220, 20, 60)).all(), "class 0 is drawn"


def test_image_bw_greys_everything_but_the_instances():
    image = np.zeros((50, 50, 3), np.uint8)
    image[..., 0] = 200  # red
    vis = Visualizer(image, _metadata(), instance_mode=ColorMode.IMAGE_BW)
    canvas = vis.draw_instance_predictions(_two_squares()).canvas
    background = canvas[25, 2]
    assert background[0] == background[1] == background[2] == round(0.299 * 200)
    assert canvas[12, 12, 0] > canvas[12, 12, 1], "instances keep their colour"


def test_video_visualizer_draws_like_visualizer_and_refuses_segmentation_mode():
    frame = np.random.default_rng(0).integers(0, 256, (50, 50, 3), dtype=np.uint8)
    ids = np.zeros((50, 50), np.int32)
    ids[10:40, 10:40] = 1
    segments = [{"id": 1, "category_id": 2, "isthing": False}]
    video = VideoVisualizer(_metadata(), ColorMode.IMAGE)
    got = video.draw_panoptic_seg_predictions(frame, torch.from_numpy(ids), segments)
    want = Visualizer(frame, _metadata()).draw_panoptic_seg(ids, segments, alpha=0.5)
    np.testing.assert_array_equal(got.get_image(), want.get_image())
    sem = video.draw_sem_seg(frame, torch.from_numpy(ids))
    assert (sem.get_image() != frame).any()
    inst = video.draw_instance_predictions(frame, _two_squares())
    assert (inst.get_image()[12, 12] != frame[12, 12]).any()
    with pytest.raises(ValueError, match="IMAGE and IMAGE_BW"):
        VideoVisualizer(_metadata(), ColorMode.SEGMENTATION)


def _whole_image_draw_mask(canvas, mask, color, alpha):
    """draw_mask computed over the whole image, in one float32 array (the plain way)."""
    fill = np.array(color, dtype=np.float32)
    region = canvas[mask].astype(np.float32)
    canvas[mask] = (region * (1 - alpha) + fill * alpha).round().astype(np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, tuple(int(c * 0.6) for c in color), thickness=1)
    distance = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(distance.argmax()), distance.shape)
    return int(x), int(y)


@pytest.mark.parametrize("seed", range(4))
def test_draw_mask_in_its_box_and_bands_equals_the_whole_image_computation(seed):
    """Blobs with holes, several parts, touching the image's edges: same pixels, same label
    position as over the whole image."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(20, 200, size=2)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    coarse = rng.normal(size=(max(2, height // 15), max(2, width // 15))).astype(np.float32)
    mask = cv2.resize(coarse, (int(width), int(height))) > 0.6
    mask[:, : rng.integers(1, 4)] |= bool(seed % 2)  # the left edge, for odd seeds
    vis = Visualizer(image)
    vis.draw_mask(mask, (10, 200, 30), "blob", alpha=0.6)
    expected = image.copy()
    position = _whole_image_draw_mask(expected, mask, (10, 200, 30), 0.6)
    assert mask.any() and np.array_equal(vis.output.canvas, expected)
    assert vis.output.labels == [("blob", position, (10, 200, 30))]


def test_semantic_argmax_by_bands_and_bool_or_float_instance_masks_draw_alike():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    scores = torch.rand(4, 70, 90)
    banded = Visualizer(image, _metadata())
    banded.draw_sem_seg(scores)
    whole = Visualizer(image, _metadata())
    whole.draw_sem_seg(scores.numpy().argmax(axis=0))
    assert np.array_equal(banded.output.get_image(), whole.output.get_image())
    masks = torch.from_numpy(rng.random((3, 70, 90)) > 0.7)
    drawings = []
    for pred_masks in (masks, masks.float()):
        instances = Instances(
            (70, 90),
            pred_masks=pred_masks,
            scores=torch.ones(3),
            pred_classes=torch.tensor([0, 1, 0]),
        )
        for mode in (ColorMode.IMAGE, ColorMode.IMAGE_BW):
            vis = Visualizer(image, _metadata(), instance_mode=mode)
            drawings.append(vis.draw_instance_predictions(instances).get_image())
    assert np.array_equal(drawings[0], drawings[2]) and np.array_equal(drawings[1], drawings[3])
