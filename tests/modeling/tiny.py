"""Tiny models built from the shipped configs, for tests that run in seconds on a CPU.

Every tiny model is a shipped YAML merged with one block of overrides (``TINY_OVERRIDES``):
ResNet-18, 32 channels, 4 heads, 2 decoder layers, a few queries, 4 classes. Inputs are
64x64 images.
"""

from collections.abc import Sequence
from pathlib import Path

import torch

from mask2former.config import get_cfg
from mask2former.modeling import build_model
from mask2former.structures import Instances

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
NUM_CLASSES = 4
THING_IDS = (0, 1)
IMAGE_SIZE = 64

#: The video model (VideoMaskFormer); built by :func:`tiny_video_cfg`, not :func:`tiny_cfg`.
VIDEO_CONFIG = "youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"

#: One representative config per meta-arch / pixel decoder / transformer decoder combination.
CONFIGS = {
    "mask2former": "coco/panoptic-segmentation/maskformer2_R50_bs16_50ep.yaml",
    "maskformer_fpn": "maskformer/ade20k-150/maskformer_R50_bs16_160k.yaml",
    "maskformer_encoder": "maskformer/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml",
    "per_pixel": "maskformer/ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml",
    "per_pixel_plus": "maskformer/ade20k-150/per_pixel_baseline_plus_R50_bs16_160k.yaml",
}

TINY_OVERRIDES = {
    "MODEL.DEVICE": "cpu",
    "MODEL.RESNETS.DEPTH": 18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": NUM_CLASSES,
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": 32,
    "MODEL.MASK_FORMER.HIDDEN_DIM": 32,
    "MODEL.MASK_FORMER.NHEADS": 4,
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
    "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 64,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.INSTANCE_ON": True,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": True,
    "MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD": 0.0,
    "MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD": 0.0,
}


def tiny_cfg(name: str, deep_supervision: bool = True, **extra):
    """The config ``CONFIGS[name]`` with ``TINY_OVERRIDES`` (and ``extra``, dots as ``__``)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / CONFIGS[name]))
    overrides = dict(TINY_OVERRIDES)
    is_mask2former = (
        cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME == "MultiScaleMaskedTransformerDecoder"
    )
    # Two decoder layers: Mask2Former counts the learned queries' prediction as one more.
    overrides["MODEL.MASK_FORMER.DEC_LAYERS"] = 3 if is_mask2former else 2
    overrides["MODEL.MASK_FORMER.DEEP_SUPERVISION"] = deep_supervision
    per_pixel_plus = cfg.MODEL.SEM_SEG_HEAD.NAME == "PerPixelBaselinePlusHead"
    overrides["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"] = NUM_CLASSES if per_pixel_plus else 6
    if cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS > 0:
        overrides["MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"] = 1
    overrides.update({k.replace("__", "."): v for k, v in extra.items()})
    cfg.merge_from_list([item for kv in overrides.items() for item in kv])
    return cfg


def build_tiny_model(name: str, deep_supervision: bool = True, seed: int = 0, **extra):
    """A tiny model in eval mode (``.train()`` it for losses), deterministic given ``seed``."""
    cfg = tiny_cfg(name, deep_supervision, **extra)
    torch.manual_seed(seed)
    kwargs = {"thing_ids": THING_IDS} if cfg.MODEL.META_ARCHITECTURE == "MaskFormer" else {}
    return build_model(cfg, **kwargs).eval()


def make_image(height: int = IMAGE_SIZE, width: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) float image with 0-255 values."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand((3, height, width), generator=g) * 255


def make_instances(
    labels: Sequence[int], masks: torch.Tensor, image_size: tuple[int, int] | None = None
) -> Instances:
    """Instances with ``gt_classes`` and ``gt_masks`` (n, H, W) bool."""
    size = image_size or tuple(masks.shape[-2:])
    inst = Instances(size)
    inst.gt_classes = torch.as_tensor(list(labels), dtype=torch.long)
    inst.gt_masks = masks.bool()
    return inst


def training_input(height: int = IMAGE_SIZE, width: int = IMAGE_SIZE, seed: int = 0) -> dict:
    """An image with two instances (a box and the rest) and their semantic labels."""
    masks = torch.zeros((2, height, width), dtype=torch.bool)
    masks[0, height // 4 : height // 2, width // 4 : width // 2] = True
    masks[1] = ~masks[0]
    sem_seg = torch.where(masks[0], torch.tensor(1), torch.tensor(2))
    return {
        "image": make_image(height, width, seed),
        "instances": make_instances([1, 2], masks),
        "sem_seg": sem_seg.long(),
    }


#: ``VIDEO_CONFIG`` shrunk: ``TINY_OVERRIDES`` (instance output only), three predictions (two
#: decoder layers), six queries, one encoder layer, no weights.
TINY_VIDEO_OVERRIDES = {
    **TINY_OVERRIDES,
    "MODEL.MASK_FORMER.TEST.SEMANTIC_ON": False,
    "MODEL.MASK_FORMER.TEST.PANOPTIC_ON": False,
    "MODEL.MASK_FORMER.DEC_LAYERS": 3,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 6,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": 1,
    "MODEL.WEIGHTS": "",
}


def tiny_video_cfg(**extra):
    """``VIDEO_CONFIG`` with ``TINY_VIDEO_OVERRIDES`` (and ``extra``, dots as ``__``)."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / VIDEO_CONFIG))
    overrides = {**TINY_VIDEO_OVERRIDES, **{k.replace("__", "."): v for k, v in extra.items()}}
    cfg.merge_from_list([item for kv in overrides.items() for item in kv])
    return cfg


def build_tiny_video_model(seed: int = 0, **extra):
    """A tiny ``VideoMaskFormer`` in eval mode, deterministic given ``seed``."""
    cfg = tiny_video_cfg(**extra)
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def video_training_input(
    num_frames: int = 2, height: int = IMAGE_SIZE, width: int = IMAGE_SIZE, seed: int = 0
) -> dict:
    """A video in the YouTube-VIS mapper's format with two tracks: a box moving right by
    ``width // 8`` per frame (class 1), and a second box (class 3) present in frame 0 only
    (``gt_ids`` -1 and an empty mask elsewhere)."""
    frames, instances = [], []
    for t in range(num_frames):
        masks = torch.zeros((2, height, width), dtype=torch.bool)
        left = width // 8 * (1 + t)
        masks[0, height // 4 : height // 2, left : left + width // 4] = True
        if t == 0:
            masks[1, height // 2 :, : width // 4] = True
        inst = make_instances([1, 3], masks)
        inst.gt_ids = torch.tensor([7, 9 if t == 0 else -1])
        frames.append(make_image(height, width, seed * 100 + t))
        instances.append(inst)
    return {"image": frames, "instances": instances, "height": height, "width": width}
