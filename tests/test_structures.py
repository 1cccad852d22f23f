"""Structures: ImageList padding, Instances indexing and concatenation, BitMasks boxes."""

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as mask_util

from mask2former.data.datasets.common import bbox_xywh
from mask2former.structures import (
    BitMasks,
    Boxes,
    ImageList,
    Instances,
    RLEMasks,
    encode_masks,
    masks_to_boxes,
)
from mask2former.structures.masks import _masks_to_boxes_torchvision


def test_image_list_pads_bottom_right_to_the_divisibility():
    a = torch.arange(3 * 5 * 7, dtype=torch.float32).view(3, 5, 7)
    b = torch.ones(3, 6, 4)
    images = ImageList.from_tensors([a, b], size_divisibility=4, pad_value=-1.0)
    assert tuple(images.tensor.shape) == (2, 3, 8, 8)
    assert images.image_sizes == [(5, 7), (6, 4)]
    assert torch.equal(images[0], a) and torch.equal(images[1], b)
    assert (images.tensor[0, :, 5:, :] == -1).all() and (images.tensor[0, :, :, 7:] == -1).all()
    assert (images.tensor[1, :, :, 4:] == -1).all()
    mask = images.padding_mask()
    assert mask.sum().item() == 2 * 64 - 5 * 7 - 6 * 4
    assert not mask[0, :5, :7].any() and mask[0, 5:, :].all()


def test_image_list_single_image_and_no_divisibility():
    image = torch.randn(3, 33, 17)
    images = ImageList.from_tensors([image], size_divisibility=32)
    assert tuple(images.tensor.shape) == (1, 3, 64, 32)
    assert torch.equal(images[0], image)
    unpadded = ImageList.from_tensors([image])
    assert tuple(unpadded.tensor.shape) == (1, 3, 33, 17)


def test_image_list_square_padding_and_errors():
    images = ImageList.from_tensors(
        [torch.zeros(3, 10, 20)], padding_constraints={"square_size": 32}
    )
    assert tuple(images.tensor.shape) == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="square_size"):
        ImageList.from_tensors([torch.zeros(3, 40, 20)], padding_constraints={"square_size": 32})
    with pytest.raises(ValueError, match="leading dims"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="at least one"):
        ImageList.from_tensors([])


def _instances(n: int, offset: int = 0) -> Instances:
    inst = Instances((10, 12))
    inst.gt_classes = torch.arange(n) + offset
    inst.gt_boxes = Boxes(torch.tensor([[0.0, 0, 1, 1]] * n) + offset)
    inst.gt_masks = BitMasks(torch.zeros(n, 10, 12, dtype=torch.bool))
    inst.names = [f"obj{i + offset}" for i in range(n)]
    return inst


def test_instances_indexing():
    inst = _instances(4)
    assert len(inst) == 4 and inst.image_size == (10, 12)
    one = inst[-1]
    assert len(one) == 1 and one.gt_classes.tolist() == [3] and one.names == ["obj3"]
    picked = inst[torch.tensor([True, False, True, False])]
    assert picked.gt_classes.tolist() == [0, 2] and picked.names == ["obj0", "obj2"]
    assert picked.gt_boxes.tensor.shape == (2, 4) and picked.gt_masks.tensor.shape == (2, 10, 12)
    by_index = inst[torch.tensor([3, 1])]
    assert by_index.names == ["obj3", "obj1"] and by_index.gt_classes.tolist() == [3, 1]
    assert inst[1:3].names == ["obj1", "obj2"]


def test_instances_errors():
    inst = _instances(3)
    with pytest.raises(ValueError, match="length 2"):
        inst.gt_scores = torch.zeros(2)
    with pytest.raises(IndexError, match="out of range"):
        inst[3]
    with pytest.raises(AttributeError, match="gt_ids"):
        _ = inst.gt_ids


def test_instances_cat():
    merged = Instances.cat([_instances(2), _instances(3, offset=10)])
    assert len(merged) == 5
    assert merged.gt_classes.tolist() == [0, 1, 10, 11, 12]
    assert merged.names == ["obj0", "obj1", "obj10", "obj11", "obj12"]
    assert merged.gt_boxes.tensor[2].tolist() == [10.0, 10.0, 11.0, 11.0]
    assert merged.gt_masks.tensor.shape == (5, 10, 12)
    other_size = Instances((5, 5), gt_classes=torch.zeros(1))
    with pytest.raises(ValueError, match="image sizes differ"):
        Instances.cat([_instances(1), other_size])
    fewer_fields = Instances((10, 12), gt_classes=torch.zeros(1))
    with pytest.raises(ValueError, match="fields differ"):
        Instances.cat([_instances(1), fewer_fields])


def test_bitmasks_boxes_match_pycocotools():
    """Tight XYXY boxes equal pycocotools' toBbox (XYWH) converted; empty masks give zeros."""
    rng = np.random.default_rng(0)
    masks = np.zeros((4, 23, 31), dtype=np.uint8)
    masks[0, 3:9, 5:6] = 1
    masks[1, 0:23, 30:31] = 1
    masks[2] = rng.random((23, 31)) > 0.97
    boxes = BitMasks(torch.from_numpy(masks)).get_bounding_boxes().tensor
    for i in range(3):
        rle = mask_util.encode(np.asfortranarray(masks[i]))
        x, y, w, h = mask_util.toBbox(rle)
        assert boxes[i].tolist() == pytest.approx([x, y, x + w, y + h])
    assert boxes[3].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert BitMasks(torch.from_numpy(masks)).nonempty().tolist() == [True, True, True, False]


def test_masks_to_boxes_is_torchvisions_with_the_max_side_one_past_the_last_pixel():
    rng = np.random.default_rng(1)
    masks = torch.from_numpy(rng.random((40, 13, 17)) > rng.random((40, 1, 1)) ** 0.1)
    masks[0] = False  # empty
    masks[1] = False
    masks[1, 0, 0] = True  # one pixel at the origin: torchvision gives zeros, as for empty
    masks[2] = False
    masks[2, 12, 16] = True  # the last pixel
    reference = torchvision.ops.masks_to_boxes(masks)
    reference[:, 2:] += masks.flatten(1).any(dim=1)[:, None]  # detectron2: exclusive max side
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert torch.equal(boxes, reference)
    # the GPU path (torchvision's function, adjusted), run here on the CPU
    assert torch.equal(_masks_to_boxes_torchvision(masks), reference)
    assert torch.equal(_masks_to_boxes_torchvision(masks.to(torch.uint8)), reference)
    assert boxes[:3].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [16, 12, 17, 13]]
    assert torch.equal(masks_to_boxes(masks.to(torch.uint8)), boxes)  # 0/1 masks too
    assert torch.equal(BitMasks(masks).get_bounding_boxes().tensor, boxes)
    assert masks_to_boxes(torch.zeros(3, 0, 5, dtype=torch.bool)).tolist() == [[0.0] * 4] * 3


def test_bbox_xywh_is_the_tight_coco_box():
    mask = np.zeros((9, 11), dtype=bool)
    mask[2:5, 3] = True
    mask[4, 3:8] = True
    assert bbox_xywh(mask) == [3, 2, 5, 3]
    with pytest.raises(ValueError, match="empty"):
        bbox_xywh(np.zeros((4, 4), dtype=bool))


def test_bitmasks_and_boxes_validate_shapes():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        BitMasks(torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Boxes(torch.zeros(3, 5))
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    boxes = Boxes(torch.tensor([[1.0, 2.0, 4.0, 8.0], [5.0, 5.0, 5.0, 9.0]]))
    assert boxes.area().tolist() == [18.0, 0.0]
    assert boxes.nonempty().tolist() == [True, False]


def test_rle_masks_decode_to_the_masks_they_encode():
    masks = torch.rand(5, 7, 9, generator=torch.Generator().manual_seed(0)) > 0.6
    rle = RLEMasks(encode_masks(masks), 7, 9)
    assert len(rle) == 5 and rle.shape == (5, 7, 9)
    assert torch.equal(rle.tensor(), masks) and rle.tensor().dtype == torch.bool
    assert torch.equal(rle[3], masks[3]) and torch.equal(rle[-1], masks[4])
    assert torch.equal(rle[1:3].tensor(), masks[1:3])
    assert RLEMasks([], 7, 9).tensor().shape == (0, 7, 9)
    with pytest.raises(ValueError, match=r"RLE of frame 0 has size \[7, 9\], not \[9, 7\]"):
        RLEMasks(rle.rles, 9, 7)
