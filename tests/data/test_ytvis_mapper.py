"""YTVISDatasetMapper: frame sampling, one augmentation per clip, tracked instances, loaders."""

import itertools
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image

from mask2former.config import ConfigError, get_cfg
from mask2former.data import (
    BadSampleError,
    DatasetCatalog,
    DatasetMapper,
    MetadataCatalog,
    build_dataset_mapper,
    build_detection_test_loader,
    build_detection_train_loader,
)
from mask2former.data.dataset_mappers import dataset_mapper_name, is_video_dataset
from mask2former.data.dataset_mappers.ytvis import (
    YTVISDatasetMapper,
    clip_instances,
    sample_frame_indices,
)
from mask2former.data.datasets import load_ytvis_json, ytvis_shapes
from mask2former.data.transforms import (
    ByClip,
    RandomFlip,
    ResizeShortestEdge,
    TransformList,
    apply_augmentations_to_clip,
)
from mask2former.modeling.meta_arch.video_maskformer_model import clip_targets
from tests.data.test_ytvis import _write_split

_names = itertools.count()


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[dict]:
    """Four ytvis_shapes train videos of 6 frames (96x128)."""
    root = tmp_path_factory.mktemp("ytvis_shapes")
    ytvis_shapes.generate_ytvis_shapes(str(root / "d"), splits={"train": (4, 6)})
    base = root / "d"
    return load_ytvis_json(str(base / "train.json"), str(base / "train" / "JPEGImages"))


def video_cfg(**overrides):
    cfg = get_cfg()
    settings = {
        "INPUT.DATASET_MAPPER_NAME": "ytvis",
        "MODEL.MASK_ON": True,
        "INPUT.FORMAT": "RGB",
        "INPUT.MIN_SIZE_TRAIN": (96,),
        "INPUT.MAX_SIZE_TRAIN": 1000,
        "INPUT.MIN_SIZE_TEST": 48,
        "INPUT.MAX_SIZE_TEST": 1000,
        "INPUT.SAMPLING_FRAME_NUM": 4,
        "INPUT.SAMPLING_FRAME_RANGE": 2,
        "INPUT.MIN_SIZE_TRAIN_SAMPLING": "choice_by_clip",
        "INPUT.RANDOM_FLIP": "flip_by_clip",
        "DATALOADER.NUM_WORKERS": 0,
        "SOLVER.IMS_PER_BATCH": 2,
        **overrides,
    }
    cfg.merge_from_list([x for kv in settings.items() for x in kv])
    return cfg


def _gt_mask(video: dict, frame: int, track: int) -> np.ndarray:
    for anno in video["annotations"][frame]:
        if anno["id"] == track:
            return mask_util.decode(anno["segmentation"]).astype(bool)
    return np.zeros((video["height"], video["width"]), bool)


def _frame_index(file_name: str) -> int:
    return int(Path(file_name).stem)


# ----------------------------------------------------------------------------- sampling
def test_sampled_frames_lie_within_range_of_a_reference_frame():
    np.random.seed(0)
    for length, num, frame_range in [(10, 3, 2), (30, 5, 20), (5, 8, 1), (2, 2, 0)]:
        for _ in range(200):
            clip = sample_frame_indices(length, num, frame_range, False)
            assert len(clip) == num and clip == sorted(clip)
            assert all(0 <= i < length for i in clip)
            assert any(all(abs(i - ref) <= frame_range for i in clip) for ref in clip)
    assert sample_frame_indices(1, 3, 5, False) == [0, 0, 0]  # a one-frame video
    np.random.seed(1)
    shuffled = [sample_frame_indices(50, 6, 25, True) for _ in range(20)]
    assert any(clip != sorted(clip) for clip in shuffled)


# ----------------------------------------------------------------------------- augmentation
def test_by_clip_draws_once_per_clip_and_plain_draws_per_frame():
    frames = [np.full((20, 30, 3), i, np.uint8) for i in range(6)]
    np.random.seed(0)
    by_clip = [ByClip(ResizeShortestEdge((10, 20, 30, 40), 1000, "choice")), ByClip(RandomFlip())]
    per_frame = [ResizeShortestEdge((10, 20, 30, 40), 1000, "choice"), RandomFlip()]
    clip_sizes, clip_flips, mixed_sizes, mixed_flips = set(), set(), 0, 0
    for _ in range(20):
        images, transforms = apply_augmentations_to_clip(by_clip, frames)
        assert len({im.shape for im in images}) == 1
        assert len({_flipped(t) for t in transforms}) == 1
        clip_sizes.add(images[0].shape)
        clip_flips.add(_flipped(transforms[0]))
        images, transforms = apply_augmentations_to_clip(per_frame, frames)
        mixed_sizes += len({im.shape for im in images}) > 1
        mixed_flips += len({_flipped(t) for t in transforms}) > 1
    assert len(clip_sizes) > 1 and clip_flips == {True, False}  # still random between clips
    assert mixed_sizes > 10 and mixed_flips > 10


def _flipped(transforms: TransformList) -> bool:
    return any(type(t).__name__ == "HFlipTransform" for t in transforms.transforms)


def test_by_clip_is_reproducible_and_keeps_the_global_stream():
    frames = [np.zeros((20, 30, 3), np.uint8)] * 3
    augs = [ByClip(ResizeShortestEdge((10, 20, 30, 40), 1000, "choice"))]
    np.random.seed(5)
    first = [apply_augmentations_to_clip(augs, frames)[0][0].shape for _ in range(5)]
    after_first = np.random.rand()
    np.random.seed(5)
    second = [apply_augmentations_to_clip(augs, frames)[0][0].shape for _ in range(5)]
    assert first == second and np.random.rand() == after_first


# ----------------------------------------------------------------------------- the mapper
def test_training_clip_flips_every_frame_together(videos):
    mapper = YTVISDatasetMapper(video_cfg(), is_train=True)
    np.random.seed(0)
    outcomes = set()
    for video in videos * 3:
        out = mapper(video)
        assert len(out["image"]) == len(out["instances"]) == len(out["file_names"]) == 4
        flips = set()
        for file_name, frame in zip(out["file_names"], out["instances"]):
            t = _frame_index(file_name)
            for track, mask in zip(frame.gt_ids.tolist(), frame.gt_masks.tensor.numpy()):
                gt = _gt_mask(video, t, track)
                flips.add(
                    "flip"
                    if np.array_equal(mask, gt[:, ::-1])
                    else "same" if np.array_equal(mask, gt) else "other"
                )
        assert flips in ({"flip"}, {"same"}), flips
        outcomes |= flips
    assert outcomes == {"flip", "same"}


def test_per_frame_flip_when_asked(videos):
    mapper = YTVISDatasetMapper(video_cfg(**{"INPUT.RANDOM_FLIP": "horizontal"}), is_train=True)
    np.random.seed(0)
    mixed = 0
    for video in videos * 3:
        out = mapper(video)
        flips = set()
        for file_name, frame in zip(out["file_names"], out["instances"]):
            track, mask = frame.gt_ids[0].item(), frame.gt_masks.tensor[0].numpy()
            flips.add(np.array_equal(mask, _gt_mask(video, _frame_index(file_name), track)))
        mixed += len(flips) > 1
    assert mixed > 0


def test_one_size_per_clip_and_frames_within_range(videos):
    cfg = video_cfg(**{"INPUT.MIN_SIZE_TRAIN": (48, 64, 80)})
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    sizes = set()
    for video in videos * 4:
        out = mapper(video)
        shapes = {tuple(im.shape) for im in out["image"]}
        assert len(shapes) == 1 and out["image"][0].dtype.is_floating_point is False
        sizes |= shapes
        indices = [_frame_index(f) for f in out["file_names"]]
        assert indices == sorted(indices) and all(0 <= i < video["length"] for i in indices)
        assert any(all(abs(i - r) <= 2 for i in indices) for r in indices)
        assert out["file_names"] == [video["file_names"][i] for i in indices]
        for frame in out["instances"]:
            assert frame.image_size == tuple(out["image"][0].shape[-2:])
        assert {k: out[k] for k in ("video_id", "height", "width", "length")} == {
            k: video[k] for k in ("video_id", "height", "width", "length")
        }
    assert {s[1] for s in sizes} == {48, 64, 80}


def test_track_ids_and_classes_are_consistent_across_frames(tmp_path):
    json_file, image_root = _write_split(tmp_path)
    video = load_ytvis_json(str(json_file), str(image_root))[1]  # video 7: 3 frames
    size = (video["height"], video["width"])
    frames = clip_instances(
        video["annotations"], [TransformList([])] * 3, [size] * 3, size, video["file_names"]
    )
    # track 11 (class 0) is absent from frame 1, track 12 (class 1) from frame 0
    assert [f.gt_ids.tolist() for f in frames] == [[11, -1], [-1, 12], [11, 12]]
    assert all(f.gt_classes.tolist() == [0, 1] for f in frames)
    assert not frames[1].gt_masks.tensor[0].any() and frames[1].gt_masks.tensor[1].sum() == 16
    assert frames[0].gt_boxes.tensor.tolist() == [[3, 2, 9, 6], [0, 0, 0, 0]]
    mapper = YTVISDatasetMapper(
        video_cfg(**{"INPUT.MIN_SIZE_TRAIN": (12,), "INPUT.SAMPLING_FRAME_NUM": 3}),
        is_train=True,
    )
    np.random.seed(0)
    for _ in range(10):
        out = mapper(video)
        for file_name, frame in zip(out["file_names"], out["instances"]):
            expected = [[11, -1], [-1, 12], [11, 12]][_frame_index(file_name)]
            assert frame.gt_ids.tolist() == expected
            assert frame.gt_classes.tolist() == [0, 1]


def test_mapped_clips_are_what_the_video_model_trains_on(tmp_path):
    """The mapper's clips give VideoMaskFormer's clip targets: each track once, labelled by
    its class, also when it is absent from some frames of the clip (one convention: a track
    keeps its class in every frame)."""
    json_file, image_root = _write_split(tmp_path)
    video = load_ytvis_json(str(json_file), str(image_root))[1]  # tracks 11 (0), 12 (1)
    cfg = video_cfg(**{"INPUT.MIN_SIZE_TRAIN": (12,), "INPUT.SAMPLING_FRAME_NUM": 3})
    mapper = YTVISDatasetMapper(cfg, is_train=True)
    np.random.seed(0)
    seen = set()
    for _ in range(10):
        out = mapper(video)
        targets = clip_targets(out["instances"], tuple(out["image"][0].shape[-2:]))
        tracks = [max(row) for row in targets["ids"].tolist()]  # each row: one id or -1
        assert sorted(zip(tracks, targets["labels"].tolist())) == [(11, 0), (12, 1)]
        for k, row in enumerate(targets["ids"].tolist()):
            assert set(row) <= {tracks[k], -1}
            for t, track in enumerate(row):
                assert (track != -1) == bool(targets["masks"][k, t].any())
        seen.add(tuple(map(tuple, targets["ids"].tolist())))
    assert len(seen) > 1  # different clips, among them ones where a track is absent


def test_test_mode_reads_every_frame_resized(videos):
    cfg = video_cfg()
    mapper = build_dataset_mapper(cfg, False)
    assert isinstance(mapper, YTVISDatasetMapper) and not mapper.is_train
    out = mapper(videos[0])
    assert out["file_names"] == videos[0]["file_names"]
    assert [tuple(im.shape) for im in out["image"]] == [(3, 48, 64)] * 6
    assert "instances" not in out and "annotations" not in out
    assert (out["height"], out["width"]) == (96, 128)
    expected = np.asarray(Image.open(videos[0]["file_names"][2]).resize((64, 48), Image.BILINEAR))
    assert np.array_equal(out["image"][2].permute(1, 2, 0).numpy(), expected)


def test_image_mappers_keep_the_image_test_mapper():
    assert type(build_dataset_mapper(get_cfg(), False)) is DatasetMapper


def test_bad_frames_name_the_file(videos, tmp_path):
    mapper = YTVISDatasetMapper(video_cfg(), is_train=False)
    video = dict(videos[0], file_names=[str(tmp_path / "gone.jpg")] * 6)
    with pytest.raises(BadSampleError, match="gone.jpg: file not found"):
        mapper(video)
    small = tmp_path / "small.jpg"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(small)
    video = dict(videos[0], file_names=videos[0]["file_names"][:5] + [str(small)])
    with pytest.raises(BadSampleError, match="small.jpg: image is 10x10"):
        mapper(video)
    with pytest.raises(BadSampleError, match="has length 6 and 5 file_names"):
        mapper(dict(videos[0], file_names=videos[0]["file_names"][:5]))


def test_config_errors_name_the_key():
    cfg = video_cfg()
    del cfg.INPUT["SAMPLING_FRAME_RANGE"]  # a config made without the video keys
    with pytest.raises(ConfigError, match="INPUT.SAMPLING_FRAME_RANGE.*add_maskformer2_video"):
        build_dataset_mapper(cfg, True)
    with pytest.raises(ConfigError, match="MODEL.MASK_ON = False"):
        YTVISDatasetMapper(video_cfg(**{"MODEL.MASK_ON": False}), True)
    assert not YTVISDatasetMapper(video_cfg(**{"MODEL.MASK_ON": False}), False).is_train
    with pytest.raises(ConfigError, match="INPUT.AUGMENTATIONS"):
        YTVISDatasetMapper(video_cfg(**{"INPUT.AUGMENTATIONS": ["brightness"]}), True)
    with pytest.raises(ConfigError, match="INPUT.RANDOM_FLIP must be one of"):
        YTVISDatasetMapper(video_cfg(**{"INPUT.RANDOM_FLIP": "diagonal"}), True)
    with pytest.raises(ConfigError, match="INPUT.MIN_SIZE_TRAIN_SAMPLING"):
        YTVISDatasetMapper(video_cfg(**{"INPUT.MIN_SIZE_TRAIN_SAMPLING": "sometimes"}), True)
    with pytest.raises(ConfigError, match="INPUT.COLOR_AUG_SSD"):
        YTVISDatasetMapper(video_cfg(**{"INPUT.COLOR_AUG_SSD": True}), True)
    with pytest.raises(ConfigError, match="INPUT.SAMPLING_FRAME_NUM must be >= 1"):
        YTVISDatasetMapper(video_cfg(**{"INPUT.SAMPLING_FRAME_NUM": 0}), True)


# ----------------------------------------------------------------------------- mapper choice
def test_video_datasets_select_the_video_mapper(registered):
    """Video datasets take the video mapper when INPUT.DATASET_MAPPER_NAME keeps its default
    (as the published video configs do), for training and testing; an explicit image mapper
    and a video mapper for image data are refused, as is a mix of both kinds."""
    cfg = video_cfg(**{"INPUT.DATASET_MAPPER_NAME": get_cfg().INPUT.DATASET_MAPPER_NAME})
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (registered,)
    assert dataset_mapper_name(cfg, [registered]) == "ytvis" and is_video_dataset(registered)
    train, test = build_dataset_mapper(cfg, True), build_dataset_mapper(cfg, False)
    assert isinstance(train, YTVISDatasetMapper) and train.is_train
    assert isinstance(test, YTVISDatasetMapper) and not test.is_train
    cfg.INPUT.DATASET_MAPPER_NAME = "mask_former_instance"
    with pytest.raises(ConfigError, match="'mask_former_instance' maps images.*video datasets"):
        build_dataset_mapper(cfg, True)
    image = "shapes_val_instance"
    assert not is_video_dataset(image)
    with pytest.raises(ConfigError, match="image and video datasets cannot be mapped together"):
        build_dataset_mapper(cfg, False, [registered, image])
    cfg.INPUT.DATASET_MAPPER_NAME = "ytvis"
    with pytest.raises(ConfigError, match="'ytvis' maps videos, but .*shapes_val_instance"):
        build_dataset_mapper(cfg, False, image)


# ----------------------------------------------------------------------------- loaders
@pytest.fixture()
def registered(videos):
    name = f"_test_ytvis_mapper_{next(_names)}"
    empty = dict(videos[0], video_id=99, annotations=[[] for _ in range(6)])
    DatasetCatalog.register(name, lambda: [*videos, empty])
    MetadataCatalog.get(name).set(evaluator_type="ytvis")
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_train_loader_batches_clips(registered):
    cfg = video_cfg(**{"DATASETS.TRAIN": (registered,), "SOLVER.IMS_PER_BATCH": 3})
    assert cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS and cfg.DATALOADER.ASPECT_RATIO_GROUPING
    batches = iter(build_detection_train_loader(cfg))
    seen = set()
    for batch in itertools.islice(batches, 4):
        assert len(batch) == 3
        for clip in batch:
            assert len(clip["image"]) == len(clip["instances"]) == 4
            seen.add(clip["video_id"])
    assert 99 not in seen  # the video without annotations is filtered out


def test_test_loader_gives_whole_videos(registered):
    loader = build_detection_test_loader(video_cfg(), registered)
    batches = list(loader)
    assert [len(b) for b in batches] == [1] * 5
    assert [len(b[0]["image"]) for b in batches] == [6] * 5
