"""Long videos clip by clip: the clip schedule, query linking, track scores (pure pieces), and
VideoMaskFormer's clip inference (equal to whole-video inference on one clip; tracks kept
through clips; frames read lazily)."""

import pytest
import torch

from mask2former.config import ConfigError
from mask2former.evaluation.ytvis_evaluation import video_output_to_results
from mask2former.modeling import build_model
from mask2former.modeling.postprocessing import video_masks_at_output_size, video_masks_rle
from mask2former.modeling.video_clips import (
    ClipLinker,
    TrackScores,
    check_clip_options,
    iter_clips,
    link_queries,
    overlap_similarity,
)
from mask2former.structures import RLEMasks, encode_masks
from tests.modeling.tiny import (
    NUM_CLASSES,
    build_tiny_video_model,
    make_image,
    tiny_cfg,
    tiny_video_cfg,
)

BIG = 20.0


# --------------------------------------------------------------------------- #
# The clip schedule
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "num_frames, length, overlap, expected",
    [
        # (start, frames, shared) per clip
        (11, 4, 1, [(0, 4, 0), (3, 4, 1), (6, 4, 1), (9, 2, 1)]),
        (11, 4, 2, [(0, 4, 0), (2, 4, 2), (4, 4, 2), (6, 4, 2), (8, 3, 2)]),
        (10, 4, 1, [(0, 4, 0), (3, 4, 1), (6, 4, 1)]),  # ends with a full clip: no more
        (3, 4, 1, [(0, 3, 0)]),  # shorter than a clip: one clip
        (5, 0, 2, [(0, 5, 0)]),  # length 0: the whole video
    ],
)
def test_clips_cover_each_frame_once_after_the_shared_ones(num_frames, length, overlap, expected):
    clips = list(iter_clips(iter(range(num_frames)), length, overlap))
    assert [(c.start, len(c.frames), c.shared) for c in clips] == expected
    for clip in clips:
        assert clip.frames == list(range(clip.start, clip.start + len(clip.frames)))
    contributed = [f for c in clips for f in c.frames[c.shared :]]
    assert contributed == list(range(num_frames))
    assert list(iter_clips(iter([]), length, overlap)) == []


def test_clips_read_their_frames_lazily():
    read = []

    def frames():
        for t in range(20):
            read.append(t)
            yield t

    for clip in iter_clips(frames(), 5, 2):
        # when a clip is handed out, nothing beyond its last frame has been read
        assert read[-1] == clip.frames[-1]


@pytest.mark.parametrize(
    "length, overlap, message",
    [
        (-1, 2, "length = -1 must be >= 0"),
        (4, 0, "overlap = 0 must be at least 1 and below length = 4"),
        (4, 4, "overlap = 4 must be at least 1 and below length = 4"),
        (0, 0, "overlap = 0 must be at least 1: "),
        (2.5, 1, "length = 2.5 must be an integer"),
        (4, True, "overlap = True must be an integer"),
    ],
)
def test_bad_clip_options_are_named(length, overlap, message):
    with pytest.raises(ValueError, match=message):
        check_clip_options(length, overlap)
    with pytest.raises(ValueError, match=message):
        list(iter_clips(iter(range(5)), length, overlap))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("CLIP_LENGTH", -3, "MODEL.MASK_FORMER.TEST.CLIP_LENGTH = -3 must be >= 0"),
        ("CLIP_OVERLAP", 0, "MODEL.MASK_FORMER.TEST.CLIP_OVERLAP = 0 must be at least 1"),
        ("CLIP_OVERLAP", 8, "CLIP_OVERLAP = 8 must be at least 1 and below "),
    ],
)
def test_bad_clip_config_values_are_named(key, value, message):
    cfg = tiny_video_cfg(MODEL__MASK_FORMER__TEST__CLIP_LENGTH=8)
    cfg.merge_from_list([f"MODEL.MASK_FORMER.TEST.{key}", value])
    with pytest.raises(ConfigError, match=message):
        build_model(cfg)


def test_image_model_refuses_clip_inference():
    cfg = tiny_cfg("mask2former", MODEL__MASK_FORMER__TEST__CLIP_LENGTH=4)
    with pytest.raises(ConfigError, match="CLIP_LENGTH = 4 is not supported by MaskFormer"):
        build_model(cfg)


# --------------------------------------------------------------------------- #
# Linking and scores
# --------------------------------------------------------------------------- #
def _box_masks(boxes, num_frames=2, size=(8, 8)) -> torch.Tensor:
    """(len(boxes), T, h, w) logits: +BIG inside each (y0, y1, x0, x1) box (None: empty)."""
    masks = torch.full((len(boxes), num_frames, *size), -BIG)
    for q, box in enumerate(boxes):
        if box is not None:
            y0, y1, x0, x1 = box
            masks[q, :, y0:y1, x0:x1] = BIG
    return masks


def test_overlap_similarity_is_the_soft_iou():
    previous = _box_masks([(0, 4, 0, 4), (4, 8, 4, 8), None])
    current = _box_masks([(0, 4, 2, 6), (0, 4, 0, 4)])
    sim = overlap_similarity(previous, current)
    assert sim.shape == (3, 2)
    torch.testing.assert_close(sim[0], torch.tensor([8 / 24, 1.0], dtype=sim.dtype))
    torch.testing.assert_close(sim[1:], torch.zeros(2, 2, dtype=sim.dtype))


def test_linking_recovers_a_permutation_of_the_queries():
    boxes = [(0, 2, 0, 2), (2, 4, 2, 4), (4, 6, 4, 6), (6, 8, 6, 8), (0, 8, 0, 1)]
    permutation = torch.tensor([3, 0, 4, 1, 2])  # query q of the next clip has box permutation[q]
    previous = _box_masks(boxes)
    current = _box_masks([boxes[i] for i in permutation])
    query_of_track = link_queries(overlap_similarity(previous, current))
    assert torch.equal(permutation[query_of_track], torch.arange(5))
    with pytest.raises(ValueError, match="3 tracks but only 2 queries"):
        link_queries(torch.zeros(3, 2))


def test_linker_lists_each_clip_by_track_and_keeps_only_the_shared_frames():
    linker = ClipLinker(overlap=1)
    first = _box_masks([(0, 4, 0, 4), (4, 8, 4, 8)], num_frames=3)
    assert linker(first).tolist() == [0, 1]
    second = _box_masks([(4, 8, 4, 8), (0, 4, 0, 4)], num_frames=3)
    assert linker(second).tolist() == [1, 0]
    assert linker._tail.shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="a clip of 1 frames .* sharing 1 frames"):
        linker(second[:, :1])


def test_track_scores_are_frame_weighted_means_and_exact_for_one_clip():
    logits = torch.randn(4, NUM_CLASSES + 1)
    one = TrackScores()
    one.add(logits, 7)
    assert torch.equal(one.mean(), logits.softmax(-1)[:, :-1])
    two = TrackScores()
    two.add(logits, 3)
    two.add(-logits, 1)
    expected = (3 * logits.softmax(-1) + (-logits).softmax(-1))[:, :-1] / 4
    torch.testing.assert_close(two.mean(), expected)
    with pytest.raises(ValueError, match="no clip"):
        TrackScores().mean()


def test_masks_resized_frame_by_frame_equal_all_frames_at_once():
    """torch's CPU bilinear resize rounds differently when it vectorises over 8 channels:
    frames must not be channels of the resize, or a clip's masks would depend on its length."""
    mask_pred = torch.randn(3, 12, 8, 10, generator=torch.Generator().manual_seed(0)) * 4
    sizes = {"padded_size": (32, 40), "image_size": (29, 37), "output_size": (45, 50)}
    at_once = video_masks_at_output_size(mask_pred, **sizes)
    assert at_once.shape == (3, 12, 45, 50)
    for t in range(12):
        assert torch.equal(
            video_masks_at_output_size(mask_pred[:, t : t + 1], **sizes)[:, 0], at_once[:, t]
        )
    for q in range(3):
        assert torch.equal(video_masks_at_output_size(mask_pred[q : q + 1], **sizes)[0], at_once[q])
    rles = video_masks_rle(mask_pred, **sizes)
    assert [len(r) for r in rles] == [12, 12, 12]
    assert rles[1] == encode_masks(at_once[1] > 0)


# --------------------------------------------------------------------------- #
# VideoMaskFormer clip by clip
# --------------------------------------------------------------------------- #
def _run(model, frames, clip_length, clip_overlap=2, **video):
    model.clip_length, model.clip_overlap = clip_length, clip_overlap
    with torch.no_grad():
        return model([{"image": frames, **video}])


@pytest.mark.parametrize("clip_length", [9, 20])
def test_one_clip_equals_whole_video_inference(clip_length):
    """9 frames: torch's resize would round differently on 9 frames at once than on one frame
    at a time if the masks were resized with frames as channels."""
    model = build_tiny_video_model()
    frames = [make_image(48, 64, seed=t) for t in range(9)]
    whole = _run(model, frames, 0, height=50, width=70)
    clipped = _run(model, iter(frames), clip_length, height=50, width=70)
    assert clipped["image_size"] == whole["image_size"] == (50, 70)
    assert clipped["pred_scores"] == whole["pred_scores"]
    assert clipped["pred_labels"] == whole["pred_labels"]
    assert len(clipped["pred_masks"]) == len(whole["pred_masks"]) == 10
    for got, expected in zip(clipped["pred_masks"], whole["pred_masks"]):
        assert isinstance(got, RLEMasks) and got.shape == (9, 50, 70)
        assert torch.equal(got.tensor(), expected)
    assert any(m.any() and not m.all() for m in whole["pred_masks"])  # not a trivial case


def test_clip_inference_output_on_a_longer_video_is_the_evaluators_format():
    model = build_tiny_video_model()
    frames = [make_image(48, 64, seed=t) for t in range(11)]
    out = _run(model, frames, 4, 1)
    assert out["image_size"] == (48, 64) and len(out["pred_masks"]) == 10
    assert out["pred_scores"] == sorted(out["pred_scores"], reverse=True)
    assert all(isinstance(c, int) and 0 <= c < NUM_CLASSES for c in out["pred_labels"])
    assert all(m.shape == (11, 48, 64) for m in out["pred_masks"])
    results = video_output_to_results(5, out, 11, 48, 64)
    assert [r["segmentations"] for r in results] == [m.rles for m in out["pred_masks"]]
    with pytest.raises(ValueError, match=r"has shape \(11, 48, 64\); expected .*\(12, 48, 64\)"):
        video_output_to_results(5, out, 12, 48, 64)


def test_predict_clips_reads_one_clip_at_a_time_and_covers_every_frame_once():
    model = build_tiny_video_model()
    read = []

    def frames():
        for t in range(10):
            read.append(t)
            yield make_image(48, 64, seed=t)

    covered = []
    for clip in model.predict_clips(frames(), clip_length=4, clip_overlap=2):
        assert read[-1] == clip.first_frame + clip.num_frames - 1
        assert clip.class_logits.shape == (6, NUM_CLASSES + 1)
        assert clip.mask_logits.shape == (6, clip.num_frames, 16, 16)  # padded to 64x64
        assert not clip.mask_logits.requires_grad
        covered.extend(range(clip.first_frame, clip.first_frame + clip.num_frames))
    assert covered == list(range(10))
    with pytest.raises(ValueError, match=r"at one size, got \[\(48, 64\), \(64, 64\)\] by frame 5"):
        list(model.predict_clips([make_image(48, 64)] * 4 + [make_image(64, 64)] * 2, 4, 1))
    with pytest.raises(ValueError, match="without frames"):
        _run(model, [], 4)


# --------------------------------------------------------------------------- #
# A stub network whose clips are designed: the tracks are known
# --------------------------------------------------------------------------- #
NUM_QUERIES = 4
SIZE = 32  # frames of 32x32 (padded to 32): masks of 8x8


def designed_clip_outputs(frame_ids: list[int], clip_index: int) -> dict:
    """A clip's decoder output: object A (class 1) fills the left half of every frame, object
    B (class 2) the bottom half from frame 5 on; the other queries are empty
    no-objects. The queries are rotated by the clip's index, so no query index is an identity,
    and A's class probability differs between clips."""
    num_frames = len(frame_ids)
    logits = torch.full((NUM_QUERIES, NUM_CLASSES + 1), -BIG)
    logits[:, NUM_CLASSES] = BIG  # no object
    masks = torch.full((NUM_QUERIES, num_frames, SIZE // 4, SIZE // 4), -BIG)
    a, b = [(q + clip_index) % NUM_QUERIES for q in (0, 1)]
    logits[a] = 0.0
    logits[a, 1] = 1.0 + clip_index  # A: class 1, more confident clip after clip
    masks[a, :, :, : SIZE // 8] = BIG
    present = torch.tensor([t >= 5 for t in frame_ids])
    if present.any():
        logits[b, NUM_CLASSES] = -BIG
        logits[b, 2] = BIG
        masks[b, present, SIZE // 8 :] = BIG
    return {"pred_logits": logits[None], "pred_masks": masks[None]}


def stub_network(model) -> list[list[int]]:
    """Replace ``model``'s network by :func:`designed_clip_outputs`, reading each frame's index
    from its pixels; returns the list of the clips run (their frame indices), filled as they
    run."""
    clips_run = []

    def forward_clips(images, num_frames):
        pixels = images[:, 0, 0, 0] * model.pixel_std[0, 0, 0] + model.pixel_mean[0, 0, 0]
        clips_run.append(pixels.round().long().tolist())
        return designed_clip_outputs(clips_run[-1], len(clips_run) - 1)

    model.forward_clips = forward_clips
    return clips_run


def stub_video_model(clip_length: int, clip_overlap: int):
    """The tiny video model with its network replaced by :func:`designed_clip_outputs`."""
    model = build_tiny_video_model()
    model.clip_length, model.clip_overlap = clip_length, clip_overlap
    return model, stub_network(model)


def index_frames(num_frames: int) -> list[torch.Tensor]:
    """Frames of SIZE x SIZE whose pixels hold their index."""
    return [torch.full((3, SIZE, SIZE), float(t)) for t in range(num_frames)]


def test_objects_keep_their_track_through_clips():
    model, clips_run = stub_video_model(clip_length=4, clip_overlap=2)
    tracks_by_clip = []
    for clip in model.predict_clips(index_frames(11)):
        left = clip.mask_logits[:, :, :, : SIZE // 8].mean((1, 2, 3)) > 0
        tracks_by_clip.append(left.nonzero().flatten().tolist())
    assert clips_run == [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 10]]
    # A is in the left half throughout: the same track in every clip, though its query rotates
    assert tracks_by_clip == [[0]] * 5


def test_tracked_instances_span_the_video_with_frame_weighted_scores():
    model, _ = stub_video_model(clip_length=4, clip_overlap=2)
    out = _run(model, index_frames(11), 4, 2)
    left = torch.zeros((11, SIZE, SIZE), dtype=torch.bool)
    left[:, :, : SIZE // 2] = True
    bottom = torch.zeros((11, SIZE, SIZE), dtype=torch.bool)
    bottom[5:, SIZE // 2 :] = True
    by_label = {label: k for k, label in reversed(list(enumerate(out["pred_labels"])))}
    a, b = by_label[1], by_label[2]
    assert torch.equal(out["pred_masks"][a].tensor(), left)
    # B appears in frame 5, which two clips share: its track is linked there, not restarted
    assert torch.equal(out["pred_masks"][b].tensor(), bottom)
    # frames contributed by clips 0..4: 4, 2, 2, 2, 1; A's class-1 probability per clip
    weights = torch.tensor([4.0, 2, 2, 2, 1], dtype=torch.float64)
    probs = torch.stack([designed_clip_outputs([0], c)["pred_logits"][0, c % 4] for c in range(5)])
    probs = probs.double().softmax(-1)[:, 1]
    assert out["pred_scores"][a] == pytest.approx(float((weights * probs).sum() / 11), rel=1e-6)
    # B is absent (no-object) in clip 0 (frames 0-3), then certain
    b_probs = torch.tensor([0.0, 1, 1, 1, 1], dtype=torch.float64)
    assert out["pred_scores"][b] == pytest.approx(float((weights * b_probs).sum() / 11), abs=1e-6)
