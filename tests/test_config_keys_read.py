"""Every key of ``get_cfg()`` is read by the code, or refused when set to another value.

The walk is dynamic: a config that records every key read (:class:`RecordingCfgNode`) drives
what ``tools/train_net.py`` drives (``default_setup``, ``DefaultTrainer``: model, criterion,
optimizer, LR scheduler, train loader and mapper, checkpointer, hooks; a training step; the
evaluation's test loader, mapper and evaluators; ``verify_results``) plus semantic TTA, for a
set of shipped configs, shrunk so each runs in seconds on a CPU on the builtin ``shapes`` and
``ytvis_shapes`` datasets. Together they take every branch that reads a key: each dataset
mapper, pixel decoder, transformer decoder, head, backbone builder, optimizer, LR schedule and
clipping type.

A key nothing reads must be in ``mask2former.config.NOT_READ`` (refused unless it keeps its
one value; each is tested here) or in :data:`EXCEPTIONS` below, with its reason.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from mask2former.config import NOT_READ, CfgNode, ConfigError, check_supported, get_cfg
from mask2former.data import MetadataCatalog
from mask2former.data.dataset_mappers import is_video_dataset
from mask2former.engine import DefaultTrainer, default_setup
from mask2former.modeling import build_model
from tests.engine.engine_toy import register_first_images

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

#: Keys of get_cfg() that nothing reads yet, each with its reason. Kept as short as possible.
EXCEPTIONS: dict[str, str] = {}


# --------------------------------------------------------------------------- #
# A config that records the keys read
# --------------------------------------------------------------------------- #
class KeyRecorder:
    """The set of full keys read; shared (not copied) by every clone of the config."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def __deepcopy__(self, memo: dict) -> KeyRecorder:
        return self


class RecordingCfgNode(CfgNode):
    """A :class:`CfgNode` that adds the full name of every leaf value read to a recorder.

    Reads are ``cfg.A.B`` (attribute access goes through ``__getitem__``), ``cfg["A"]`` and
    ``cfg.get("A")``; ``dump()``, iteration and ``clone()`` are not reads. Clones record into
    the same recorder.
    """

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        recorder = self.__dict__.get("_recorder")
        if recorder is not None and not isinstance(value, CfgNode):
            recorder.read.add(self.__dict__["_prefix"] + key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def _attach(node: RecordingCfgNode, recorder: KeyRecorder, prefix: str = "") -> None:
    node.__dict__["_recorder"] = recorder
    node.__dict__["_prefix"] = prefix
    for key, value in dict.items(node):
        if isinstance(value, RecordingCfgNode):
            _attach(value, recorder, prefix + key + ".")


def recording(cfg: CfgNode, recorder: KeyRecorder) -> RecordingCfgNode:
    """A frozen copy of ``cfg`` whose reads go to ``recorder``."""
    rec = RecordingCfgNode(cfg)
    _attach(rec, recorder)
    rec.freeze()
    return rec


def all_keys(node: CfgNode, prefix: str = "") -> Iterator[str]:
    for key, value in dict.items(node):
        if isinstance(value, CfgNode):
            yield from all_keys(value, prefix + key + ".")
        else:
            yield prefix + key


def test_recording_config_records_reads_clones_and_not_dumps():
    recorder = KeyRecorder()
    cfg = recording(get_cfg(), recorder)
    cfg.dump()
    assert recorder.read == set()
    assert cfg.MODEL.RESNETS.DEPTH == 50 and cfg.clone().SOLVER.get("MAX_ITER") == 40000
    assert cfg["SEED"] == -1 and cfg.INPUT.CROP.ENABLED is False
    assert recorder.read == {
        "MODEL.RESNETS.DEPTH",
        "SOLVER.MAX_ITER",
        "SEED",
        "INPUT.CROP.ENABLED",
    }


# --------------------------------------------------------------------------- #
# The walk
# --------------------------------------------------------------------------- #
SUBSET_SIZE = 2


#: Training / test datasets for each dataset mapper.
SHAPES_FOR_MAPPER = {
    "mask_former_semantic": ("shapes_train_sem_seg", "shapes_val_sem_seg"),
    "mask_former_panoptic": ("shapes_train_panoptic", "shapes_val_panoptic_with_sem_seg"),
    "detr_panoptic": ("shapes_train_panoptic", "shapes_val_panoptic_with_sem_seg"),
    "coco_panoptic_lsj": ("shapes_train_panoptic", "shapes_val_panoptic_with_sem_seg"),
    "mask_former_instance": ("shapes_train_instance", "shapes_val_instance"),
    "coco_instance_lsj": ("shapes_train_instance", "shapes_val_instance"),
}
#: Training / test datasets of the video configs (their video datasets select the video mapper).
VIDEO_SHAPES = ("ytvis_shapes_train", "ytvis_shapes_val")

#: Shipped config -> overrides that take the branches no published config takes.
WALK: dict[str, dict[str, Any]] = {
    "shapes/mask2former_R18_quickstart.yaml": {
        # BN in the ResNet: precise BN; SGD, cosine LR, per-parameter norm clipping
        "TEST.PRECISE_BN.ENABLED": True,
        "TEST.PRECISE_BN.NUM_ITER": 1,
        "SOLVER.OPTIMIZER": "SGD",
        "SOLVER.LR_SCHEDULER_NAME": "WarmupCosineLR",
        "SOLVER.CLIP_GRADIENTS.ENABLED": True,
        "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "norm",
        # validation loss, and the best checkpoint by it
        "TEST.VAL_LOSS.PERIOD": 1,
        "TEST.VAL_LOSS.NUM_ITER": 1,
        "SOLVER.BEST_CHECKPOINTER.ENABLED": True,
        "SOLVER.BEST_CHECKPOINTER.METRIC": "val_total_loss",
        "SOLVER.BEST_CHECKPOINTER.MODE": "min",
    },
    # LSJ mappers, multi-step LR, full-model clipping, AMP
    # (shapes stores instances as RLE: the LSJ mapper needs INPUT.MASK_FORMAT bitmask for them)
    "coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml": {"INPUT.MASK_FORMAT": "bitmask"},
    "coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml": {},
    # semantic mapper (crop, colour augmentation, padding), poly LR, TTA evaluation; instance
    # mapper
    "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml": {"TEST.AUG.ENABLED": True},
    "ade20k/instance-segmentation/maskformer2_R50_bs16_160k.yaml": {},
    # MaskFormer: DeepLab ResNet + BasePixelDecoder; DETR panoptic mapper + encoder decoder
    "maskformer/ade20k-150/maskformer_R101c_bs16_160k.yaml": {},
    "maskformer/coco-panoptic/maskformer_panoptic_R50_bs64_554k.yaml": {},
    # SemanticSegmentor with the per-pixel heads
    "maskformer/ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml": {},
    "maskformer/ade20k-150/per_pixel_baseline_plus_R50_bs16_160k.yaml": {},
    # VideoMaskFormer: the video mapper (clip sampling, by-clip augmentations), video decoder,
    # evaluation per video
    "youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml": {},
}


def _shrink(cfg: CfgNode, output_dir: Path) -> dict[str, Any]:
    """Overrides that make ``cfg`` train one step and evaluate two images in seconds."""
    if is_video_dataset(cfg.DATASETS.TRAIN[0]):
        train, test = VIDEO_SHAPES
    else:
        train, test = SHAPES_FOR_MAPPER[cfg.INPUT.DATASET_MAPPER_NAME]
    deeplab = cfg.MODEL.BACKBONE.NAME == "build_resnet_deeplab_backbone"
    per_pixel_plus = cfg.MODEL.SEM_SEG_HEAD.NAME == "PerPixelBaselinePlusHead"
    decoder = cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME
    masked = decoder.endswith("MultiScaleMaskedTransformerDecoder")  # image or video
    meta = MetadataCatalog.get(train)
    num_classes = len(meta.get("stuff_classes") or meta.thing_classes)  # instance: things only
    overrides: dict[str, Any] = {
        "MODEL.DEVICE": "cpu",
        "MODEL.WEIGHTS": "",
        "MODEL.RESNETS.DEPTH": 50 if deeplab else 18,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": 64,
        "MODEL.RESNETS.WIDTH_PER_GROUP": 16,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 32 if deeplab else 64,
        "MODEL.SWIN.EMBED_DIM": 16,
        "MODEL.SWIN.DEPTHS": [1, 1, 1, 1],
        "MODEL.SWIN.NUM_HEADS": [1, 1, 2, 2],
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_classes,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
        "MODEL.SEM_SEG_HEAD.MASK_DIM": 32,
        "MODEL.MASK_FORMER.HIDDEN_DIM": 32,
        "MODEL.MASK_FORMER.NHEADS": 4,
        "MODEL.MASK_FORMER.DIM_FEEDFORWARD": 64,
        "MODEL.MASK_FORMER.DEC_LAYERS": 3 if masked else 2,
        "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 6,
        "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 64,
        "DATASETS.TRAIN": (train,),
        "DATASETS.TEST": (register_first_images(test, SUBSET_SIZE),),
        "DATALOADER.NUM_WORKERS": 0,
        "INPUT.MIN_SIZE_TRAIN": (64,),
        "INPUT.MAX_SIZE_TRAIN": 64,
        "INPUT.MIN_SIZE_TEST": 64,
        "INPUT.MAX_SIZE_TEST": 64,
        "INPUT.IMAGE_SIZE": 64,
        "INPUT.CROP.TYPE": "absolute",
        "INPUT.CROP.SIZE": [48, 48],
        "TEST.AUG.MIN_SIZES": (48, 64),
        "TEST.AUG.MAX_SIZE": 128,
        "SOLVER.IMS_PER_BATCH": 2,
        "SOLVER.MAX_ITER": 1,
        "SOLVER.CHECKPOINT_PERIOD": 1,
        # float16 autocast on a CPU is slow; the key is read either way
        "SOLVER.AMP.PRECISION": "bfloat16",
        "TEST.EVAL_PERIOD": 0,
        "OUTPUT_DIR": str(output_dir),
    }
    if cfg.INPUT.SIZE_DIVISIBILITY > 0:
        overrides["INPUT.SIZE_DIVISIBILITY"] = 64
    if cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS > 0:
        overrides["MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS"] = 1
    if cfg.MODEL.MASK_FORMER.ENC_LAYERS > 0:
        overrides["MODEL.MASK_FORMER.ENC_LAYERS"] = 1
    if per_pixel_plus:
        overrides["MODEL.MASK_FORMER.NUM_OBJECT_QUERIES"] = num_classes
    return overrides


def walk_config(name: str, extra: dict[str, Any], output_dir: Path) -> set[str]:
    """The keys read when ``configs/name`` (shrunk, plus ``extra``) trains and evaluates."""
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / name))
    overrides = {**_shrink(cfg, output_dir), **extra}
    cfg.merge_from_list([item for kv in overrides.items() for item in kv])
    recorder = KeyRecorder()
    cfg = recording(cfg, recorder)
    default_setup(cfg, argparse.Namespace(eval_only=False))
    torch.manual_seed(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()  # one step, the final evaluation (with TTA if enabled), verify_results
    return recorder.read


def walk_all(output_root: Path) -> dict[str, set[str]]:
    """{config name: keys read} for every config of :data:`WALK`."""
    return {
        name: walk_config(name, extra, output_root / f"walk{i}")
        for i, (name, extra) in enumerate(WALK.items())
    }


@pytest.mark.slow
def test_every_key_is_read_refused_or_an_exception(tmp_path):
    """One walk (about 40 s on a CPU), three checks."""
    keys_read = walk_all(tmp_path)
    check_every_key_is_read_refused_or_an_exception(keys_read)
    check_each_walked_config_reads_its_own_branch(keys_read)
    check_extension_keys(keys_read)


def check_every_key_is_read_refused_or_an_exception(keys_read: dict[str, set[str]]) -> None:
    read = set().union(*keys_read.values())
    refused = {entry.key for entry in NOT_READ}
    keys = set(all_keys(get_cfg()))
    unread = sorted(keys - read - refused - set(EXCEPTIONS))
    assert unread == [], f"config keys nothing reads: {unread}"
    # the lists stay honest: no exception or refused key is read after all
    assert sorted((refused | set(EXCEPTIONS)) & read) == []
    assert set(EXCEPTIONS) <= keys and refused <= keys


#: Keys of ours that the official code does not have; each defaults to the official behaviour.
EXTENSION_KEYS = {
    "MODEL.MASK_FORMER.MASK_LOSS": "auto",  # the loss of each decoder's official repository
    "SOLVER.AMP.PRECISION": "float16",  # the official AMP
    "DATALOADER.SKIP_BAD_SAMPLES": False,  # a bad sample fails, as officially
    "TEST.BATCH_INDEPENDENT": False,  # batched inference pads to the largest image, as officially
    "MODEL.MASK_FORMER.TEST.CLIP_LENGTH": 0,  # a video is one clip, as officially
    "MODEL.MASK_FORMER.TEST.CLIP_OVERLAP": 2,  # read with CLIP_LENGTH > 0
    "TEST.PRECISION": "float32",  # inference in float32, as officially
    # features the official code lacks, off by default
    "TEST.VAL_LOSS.PERIOD": 0,
    "TEST.VAL_LOSS.DATASETS": (),
    "TEST.VAL_LOSS.NUM_ITER": 0,
    "SOLVER.BEST_CHECKPOINTER.ENABLED": False,
    "SOLVER.BEST_CHECKPOINTER.METRIC": "",
    "SOLVER.BEST_CHECKPOINTER.MODE": "max",
    "TEST.SLIDING_WINDOW.ENABLED": False,
    "TEST.SLIDING_WINDOW.TILE_SIZE": (512, 512),
    "TEST.SLIDING_WINDOW.OVERLAP": (128, 128),
    "DATASETS.FOLDERS": (),  # no dataset folder: only the registered datasets, as officially
    "DETERMINISTIC": False,
}


def check_extension_keys(keys_read: dict[str, set[str]]) -> None:
    """Read, documented as extensions in defaults.py, defaulting to the official behaviour."""
    read = set().union(*keys_read.values())
    cfg = get_cfg()
    source = (Path(__file__).resolve().parents[1] / "mask2former/config/defaults.py").read_text()
    for key, default in EXTENSION_KEYS.items():
        assert key in read, key
        node = cfg
        for name in key.split("."):
            node = node[name]
        assert node == default, key
        # the comment block right above the key, or on its line, says it is an extension
        line = next(i for i, text in enumerate(source.splitlines()) if f"_C.{key} =" in text)
        assert "(extension)" in "\n".join(source.splitlines()[line - 3 : line + 1]), key


def check_each_walked_config_reads_its_own_branch(keys_read: dict[str, set[str]]) -> None:
    """The walk would be vacuous if a config failed to reach its branch."""
    quick = keys_read["shapes/mask2former_R18_quickstart.yaml"]
    assert {"TEST.PRECISE_BN.NUM_ITER", "SOLVER.MOMENTUM", "SOLVER.BASE_LR_END"} <= quick
    assert "SOLVER.CLIP_GRADIENTS.NORM_TYPE" in quick
    assert {"TEST.VAL_LOSS.DATASETS", "SOLVER.BEST_CHECKPOINTER.MODE"} <= quick
    swin = keys_read["coco/panoptic-segmentation/swin/maskformer2_swin_tiny_bs16_50ep.yaml"]
    assert "MODEL.SWIN.WINDOW_SIZE" in swin and "MODEL.RESNETS.DEPTH" not in swin
    deeplab = keys_read["maskformer/ade20k-150/maskformer_R101c_bs16_160k.yaml"]
    assert {"MODEL.RESNETS.STEM_TYPE", "MODEL.RESNETS.RES5_MULTI_GRID"} <= deeplab
    lsj = keys_read["coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml"]
    assert {"INPUT.IMAGE_SIZE", "INPUT.MIN_SCALE", "INPUT.MAX_SCALE"} <= lsj
    per_pixel = keys_read["maskformer/ade20k-150/per_pixel_baseline_R50_bs16_160k.yaml"]
    assert "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT" in per_pixel
    video = keys_read["youtubevis_2019/video_maskformer2_R50_bs16_8ep.yaml"]
    assert {"INPUT.SAMPLING_FRAME_NUM", "INPUT.AUGMENTATIONS", "MODEL.MASK_ON"} <= video


# --------------------------------------------------------------------------- #
# Refused keys
# --------------------------------------------------------------------------- #
def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, list):
        return [_other_value(value[0])] + value[1:]
    return value + 1


@pytest.mark.parametrize("entry", NOT_READ, ids=lambda e: e.key)
def test_each_unread_key_is_refused_naming_key_and_value(entry):
    cfg = get_cfg()
    assert check_supported(cfg) is None  # the defaults are the supported values
    value = _other_value(copy.deepcopy(entry.value))
    cfg.merge_from_list([entry.key, value])
    with pytest.raises(ConfigError) as info:
        check_supported(cfg)
    assert f"{entry.key} = {value!r} is not supported" in str(info.value)
    with pytest.raises(ConfigError, match=entry.key):
        build_model(cfg)
    with pytest.raises(ConfigError, match=entry.key):
        DefaultTrainer(cfg)
