"""VideoMaskFormer (Mask2Former for video instance segmentation) as a tiny model from the shipped
YouTube-VIS config: training on clips, clip targets, inference output, image checkpoints."""

import pickle

import pytest
import torch

from mask2former.checkpoint import read_checkpoint
from mask2former.checkpoint.matching import load_state_dict_exact
from mask2former.config import ConfigError
from mask2former.modeling import build_model
from mask2former.modeling.meta_arch.video_maskformer_model import clip_targets
from tests.modeling.test_meta_arch import ZERO_GRAD_AT_INIT
from tests.modeling.tiny import (
    NUM_CLASSES,
    build_tiny_model,
    build_tiny_video_model,
    make_image,
    make_instances,
    tiny_video_cfg,
    video_training_input,
)

LOSS_NAMES = {
    f"{name}{suffix}"
    for name in ("loss_ce", "loss_mask", "loss_dice")
    for suffix in ("", "_0", "_1")
}


def test_training_step_on_two_frame_clips_gives_finite_losses_and_gradients():
    model = build_tiny_video_model().train()
    videos = [video_training_input(2, seed=0), video_training_input(2, 48, 64, seed=1)]
    losses = model(videos)
    assert set(losses) == LOSS_NAMES
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        assert p.requires_grad, name  # the published video configs freeze nothing
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        if name not in ZERO_GRAD_AT_INIT:
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_clip_targets_keep_tracks_present_somewhere_with_their_class():
    """Track 9 is in frame 0 only: in frame 1 the mapper gives it id -1 and keeps its class
    (the published model would take a placeholder class there); track 5 is in no frame."""
    masks = [torch.zeros((3, 4, 6), dtype=torch.bool) for _ in range(2)]
    masks[0][0, :2, :2] = masks[1][0, 2:, 2:] = True
    masks[0][1, 3, 5] = True
    frames = [make_instances([1, 3, 2], masks[0]), make_instances([1, 3, 2], masks[1])]
    frames[0].gt_ids = torch.tensor([7, 9, -1])
    frames[1].gt_ids = torch.tensor([7, -1, -1])
    targets = clip_targets(frames, (8, 8))
    assert targets["labels"].tolist() == [1, 3]
    assert targets["ids"].tolist() == [[7, 7], [9, -1]]
    assert targets["masks"].shape == (2, 2, 8, 8) and targets["masks"].dtype == torch.float32
    assert torch.equal(targets["masks"][:, :, :4, :6], torch.stack(masks, 1)[:2].float())
    assert targets["masks"][:, :, 4:].sum() == 0 and targets["masks"][..., 6:].sum() == 0


def test_clip_targets_refuse_inconsistent_frames():
    frames = [make_instances([1, 2], torch.zeros(2, 4, 4)) for _ in range(2)]
    with pytest.raises(ValueError, match="need gt_ids"):
        clip_targets(frames, (4, 4))
    for f in frames:
        f.gt_ids = torch.tensor([3, 4])
    frames[1].gt_classes = torch.tensor([1, 0])
    with pytest.raises(
        ValueError, match=r"track 1's gt_classes differ between frames \(\[2, 0\]\)"
    ):
        clip_targets(frames, (4, 4))
    frames[1].gt_ids = torch.tensor([3, -1])  # absent from frame 1: its class still counts
    with pytest.raises(ValueError, match="track 1's gt_classes differ"):
        clip_targets(frames, (4, 4))
    frames[1] = frames[1][:1]
    with pytest.raises(ValueError, match=r"same tracks, got counts \[2, 1\]"):
        clip_targets(frames, (4, 4))


def test_training_batch_must_be_clips_of_one_length_with_instances_per_frame():
    model = build_tiny_video_model().train()
    with pytest.raises(ValueError, match=r"one number of frames, got \[2, 3\]"):
        model([video_training_input(2), video_training_input(3)])
    video = video_training_input(2)
    video["instances"] = video["instances"][:1]
    with pytest.raises(ValueError, match="video 0: 2 frames but 1 'instances'"):
        model([video])
    video["instances"][0].remove("gt_ids")
    video["instances"].append(video["instances"][0])
    with pytest.raises(ValueError, match="video 0: .*gt_ids"):
        model([video])


def test_inference_gives_the_published_video_output():
    model = build_tiny_video_model()
    frames = [make_image(48, 64, seed=t) for t in range(3)]
    with torch.no_grad():
        out = model([{"image": frames, "height": 50, "width": 70}])
    assert set(out) == {"image_size", "pred_scores", "pred_labels", "pred_masks"}
    assert out["image_size"] == (50, 70)
    assert len(out["pred_scores"]) == len(out["pred_labels"]) == len(out["pred_masks"]) == 10
    assert out["pred_scores"] == sorted(out["pred_scores"], reverse=True)
    assert all(isinstance(s, float) and 0 < s < 1 for s in out["pred_scores"])
    assert all(isinstance(c, int) and 0 <= c < NUM_CLASSES for c in out["pred_labels"])
    for mask in out["pred_masks"]:
        assert mask.shape == (3, 50, 70) and mask.dtype == torch.bool
        assert mask.device.type == "cpu"
    with torch.no_grad():
        sized = model([{"image": frames}])  # no height/width: the input size
    assert sized["image_size"] == (48, 64) and sized["pred_masks"][0].shape == (3, 48, 64)
    with pytest.raises(ValueError, match="one video per batch, got 2"):
        model([{"image": frames}, {"image": frames}])
    with pytest.raises(ValueError, match="frames of a video at one size"):
        model([{"image": [make_image(48, 64), make_image(64, 64)]}])


def test_forward_clips_of_a_batch_gives_what_each_clip_gives_alone():
    """The per-clip forward is what a clip-by-clip inference runs: clips do not mix."""
    model = build_tiny_video_model()
    frames = [make_image(seed=t) for t in range(4)]
    images = model.preprocess(frames).tensor
    with torch.no_grad():
        both = model.forward_clips(images, num_frames=2)
        first = model.forward_clips(images[:2], num_frames=2)
        second = model.forward_clips(images[2:], num_frames=2)
    assert both["pred_masks"].shape == (2, 6, 2, 16, 16)
    for c, alone in enumerate((first, second)):
        torch.testing.assert_close(both["pred_logits"][c], alone["pred_logits"][0])
        torch.testing.assert_close(both["pred_masks"][c], alone["pred_masks"][0])


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.MASK_FORMER.TEST.SEMANTIC_ON", True),
        ("MODEL.MASK_FORMER.TEST.PANOPTIC_ON", True),
        ("MODEL.MASK_FORMER.TEST.INSTANCE_ON", False),
        ("TEST.SLIDING_WINDOW.ENABLED", True),
    ],
)
def test_outputs_other_than_instances_are_refused(key, value):
    cfg = tiny_video_cfg(**{key.replace(".", "__"): value})
    with pytest.raises(ConfigError, match=f"{key} = {value} is not supported by VideoMaskFormer"):
        build_model(cfg)


@pytest.mark.parametrize("image_classes", [6, NUM_CLASSES])
def test_image_checkpoint_loads_into_the_video_model(tmp_path, image_classes):
    """A COCO-trained image Mask2Former saved as a detectron2 .pkl (numpy arrays, no module
    versions), as the published video configs' MODEL.WEIGHTS: every weight loads by name; only
    the class head and the no-object weights of another number of classes are skipped (shape
    mismatch), as detectron2's checkpointer skips them for the published model."""
    image = build_tiny_model("mask2former", MODEL__SEM_SEG_HEAD__NUM_CLASSES=image_classes)
    path = tmp_path / "model_final.pkl"
    arrays = {k: v.numpy() for k, v in image.state_dict().items()}
    path.write_bytes(pickle.dumps({"model": arrays, "__author__": "test"}))
    video = build_tiny_video_model(seed=1)
    result = load_state_dict_exact(video, read_checkpoint(str(path))["model"], str(path))
    assert result.unexpected_keys == []
    skipped = {k for k, _, _ in result.incorrect_shapes}
    if image_classes == NUM_CLASSES:
        assert result.missing_keys == [] and skipped == set()
    else:
        class_keys = {"sem_seg_head.predictor.class_embed.weight", "criterion.empty_weight"}
        class_keys.add("sem_seg_head.predictor.class_embed.bias")
        assert skipped == set(result.missing_keys) == class_keys
    video_state = video.state_dict()
    for key, value in image.state_dict().items():
        if key not in skipped:
            assert torch.equal(video_state[key], value), key
