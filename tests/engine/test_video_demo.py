"""demo/demo.py with a VideoMaskFormer config: tracked instances drawn clip by clip, one colour
per track through the video."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mask2former.engine import DefaultPredictor
from mask2former.engine.video_demo import (
    DEMO_CLIP_LENGTH,
    VideoTrackingDemo,
    draw_tracks,
    is_video_model,
    track_color,
)
from tests.engine.test_demo import load_demo
from tests.modeling.test_video_clips import SIZE, stub_network
from tests.modeling.tiny import (
    CONFIG_DIR,
    TINY_VIDEO_OVERRIDES,
    VIDEO_CONFIG,
    build_tiny_model,
    tiny_video_cfg,
)


def _blend(background: np.ndarray, colour) -> np.ndarray:
    """What draw_mask paints over ``background``: half the colour."""
    return np.round(background * 0.5 + np.array(colour, dtype=np.float64) * 0.5)


def test_track_colours_are_fixed_and_distinct():
    colours = [track_color(i) for i in range(16)]
    assert colours == [track_color(i) for i in range(16)]
    assert len(set(colours)) == 16
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colours)


def test_draw_tracks_fills_each_track_with_its_colour_wherever_it_is():
    gray = np.full((40, 60, 3), 100, np.uint8)
    for x0 in (5, 30):  # the same track at two places, as in two frames
        masks = np.zeros((2, 40, 60), bool)
        masks[0, 10:30, x0 : x0 + 20] = True
        masks[1, :6, :] = True
        drawing = draw_tracks(gray, masks, [3, 9], [1, 2], [0.9, 0.8])
        interior = np.zeros((40, 60), bool)
        interior[12:28, x0 + 2 : x0 + 18] = True
        matching = (np.abs(drawing[interior] - _blend(100, track_color(3))).max(1) <= 1).mean()
        assert matching > 0.6, matching  # the label covers part of the interior
        assert (drawing[30:, :] == 100).all()  # nothing drawn outside the tracks


class FakeCapture:
    """``cv2.VideoCapture``'s read() over BGR frames; counts the frames read."""

    def __init__(self, frames):
        self.frames, self.read_count = list(frames), 0

    def read(self):
        if self.read_count == len(self.frames):
            return False, None
        self.read_count += 1
        return True, self.frames[self.read_count - 1]


def _video_predictor(**extra) -> DefaultPredictor:
    cfg = tiny_video_cfg(
        INPUT__MIN_SIZE_TEST=SIZE, INPUT__MAX_SIZE_TEST=SIZE, INPUT__FORMAT="BGR", **extra
    )
    return DefaultPredictor(cfg)


def test_a_track_keeps_its_colour_through_clips_though_its_query_changes():
    """The designed clips of tests/modeling/test_video_clips.py: object A fills the left half
    in every frame from a different query in each clip, B the bottom half from frame 5 on."""
    predictor = _video_predictor()
    clips_run = stub_network(predictor.model)
    # pixels: the frame index; the model sees them at SIZE x SIZE, they are drawn at 4x that
    frames = [np.full((4 * SIZE, 4 * SIZE, 3), t, np.uint8) for t in range(11)]
    capture = FakeCapture(frames)
    demo = VideoTrackingDemo(predictor, confidence_threshold=0.3, clip_length=4, clip_overlap=2)
    drawings = []
    for drawing in demo.run_on_video(capture):
        drawings.append(drawing)
        # frames are drawn as their clip finishes: at most one clip is read ahead
        assert capture.read_count - len(drawings) <= 4
    assert len(drawings) == 11 and len(clips_run) == 5
    left = np.zeros((4 * SIZE, 4 * SIZE), bool)
    left[8:56, 8:56] = True  # the top-left quarter: B fills the bottom half from frame 5
    bottom_right = np.zeros((4 * SIZE, 4 * SIZE), bool)
    bottom_right[72:120, 72:120] = True
    b_tracks = set()
    for t, drawing in enumerate(drawings):
        a_match = np.abs(drawing[left] - _blend(t, track_color(0))).max(1) <= 1
        assert a_match.mean() > 0.6, (t, a_match.mean())
        if t >= 5:  # B: the colour of one other track in every frame it is in
            fill = 2 * np.median(drawing[bottom_right], axis=0) - t
            b_tracks |= {k for k in (1, 2, 3) if np.abs(fill - track_color(k)).max() <= 2}
        else:
            assert (drawing[bottom_right] == t).all()
    assert len(b_tracks) == 1


def test_video_demo_writes_every_frame_of_a_video_file(tmp_path):
    video = tmp_path / "v.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for t in range(9):
        frame = np.full((48, 64, 3), 60, np.uint8)
        frame[10:30, 5 + 4 * t : 25 + 4 * t] = (40, 200, 220)
        writer.write(frame)
    writer.release()
    overrides = {
        **TINY_VIDEO_OVERRIDES,
        "INPUT.MIN_SIZE_TEST": 48,
        "MODEL.MASK_FORMER.TEST.CLIP_LENGTH": 4,
        "MODEL.MASK_FORMER.TEST.CLIP_OVERLAP": 1,
    }
    opts = [str(x) for kv in overrides.items() for x in kv]
    out = tmp_path / "out.mp4"
    load_demo().main(
        ["--config-file", str(CONFIG_DIR / VIDEO_CONFIG), "--video-input", str(video)]
        + ["--output", str(out), "--confidence-threshold", "0", "--opts"]
        + opts
    )
    capture = cv2.VideoCapture(str(out))
    sizes = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        sizes.append(frame.shape)
    assert sizes == [(48, 64, 3)] * 9


def test_demo_clip_settings_and_refusals():
    predictor = _video_predictor()
    assert is_video_model(predictor.model)
    demo = VideoTrackingDemo(predictor)
    assert (demo.clip_length, demo.clip_overlap) == (DEMO_CLIP_LENGTH, 2)  # config: whole video
    configured = _video_predictor(
        MODEL__MASK_FORMER__TEST__CLIP_LENGTH=8, MODEL__MASK_FORMER__TEST__CLIP_OVERLAP=3
    )
    demo_configured = VideoTrackingDemo(configured)
    assert (demo_configured.clip_length, demo_configured.clip_overlap) == (8, 3)
    with pytest.raises(ValueError, match="segments videos: use --video-input"):
        demo.run_on_image(np.zeros((8, 8, 3), np.uint8))
    image_model = build_tiny_model("mask2former")
    assert not is_video_model(image_model)
    with pytest.raises(TypeError, match="needs a VideoMaskFormer, got MaskFormer"):
        VideoTrackingDemo(SimpleNamespace(model=image_model))
