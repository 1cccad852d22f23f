"""torch.export and ONNX export match eager: the R50 Mask2Former logits graph, and the
semantic graph with its post-processing (label maps) on tiny models."""

import pytest
import torch

from mask2former.config import get_cfg
from mask2former.export import LogitsModel, SemanticLabelsModel, export_onnx, export_program
from mask2former.modeling import build_model
from mask2former.ops import force_reference_path
from tests.modeling.tiny import CONFIG_DIR, CONFIGS, build_tiny_model, make_image

# Export changes no arithmetic, but decomposed / re-fused operators may round differently.
ATOL = 1e-4
RTOL = 1e-4


@pytest.fixture(scope="module")
def r50_and_images():
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG_DIR / CONFIGS["mask2former"]))  # R50 COCO panoptic
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    images = torch.rand(1, 3, 64, 96) * 255
    with torch.no_grad():
        eager = LogitsModel(model)(images)
    return model, images, eager


@pytest.mark.slow
def test_torch_export_matches_eager(r50_and_images):
    model, images, (logits, masks) = r50_and_images
    program = export_program(model, images)
    out_logits, out_masks = program.module()(images)
    torch.testing.assert_close(out_logits, logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out_masks, masks, atol=ATOL, rtol=RTOL)


@pytest.mark.slow
def test_onnx_export_matches_eager(r50_and_images, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extras")
    model, images, (logits, masks) = r50_and_images
    path = export_onnx(model, images, str(tmp_path / "m2f.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out_logits, out_masks = session.run(None, {"images": images.numpy()})
    torch.testing.assert_close(torch.from_numpy(out_logits), logits, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(torch.from_numpy(out_masks), masks, atol=ATOL, rtol=RTOL)


def test_export_refuses_training_mode(r50_and_images):
    model, images, _ = r50_and_images
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            export_program(model, images)
    finally:
        model.eval()


# --------------------------------------------------------------------------- #
# With post-processing: label maps
# --------------------------------------------------------------------------- #
#: Each case: tiny model (its post-processing order), image size, requested output size.
#: The panoptic model resizes its masks before semantic inference, the semantic-only one
#: its class scores after; 50x70 is padded to 64x96, cropped back and resized to 100x140.
LABEL_CASES = {
    "masks_first_64x64": ({}, (64, 64), None),
    "masks_first_50x70_to_100x140": ({}, (50, 70), (100, 140)),
    "scores_first_50x70_to_40x56": (
        {"PANOPTIC_ON": False, "INSTANCE_ON": False},
        (50, 70),
        (40, 56),
    ),
}

#: Top-2 class scores closer than this are a tie within float noise: either label is right.
TIE = 1e-5


def label_model(test_flags: dict):
    """A tiny Mask2Former whose label maps hold several classes (at initialisation one class
    wins everywhere): class logits of unit-variance weights, mask logits 10 times larger."""
    extra = {f"MODEL__MASK_FORMER__TEST__{k}": v for k, v in test_flags.items()}
    model = build_tiny_model("mask2former", **extra)
    predictor = model.sem_seg_head.predictor
    torch.manual_seed(0)
    with torch.no_grad():
        predictor.class_embed.weight.normal_()
        predictor.mask_embed.layers[-1].weight.mul_(10)
    return model


def eager_scores(model, images: torch.Tensor, output_size) -> torch.Tensor:
    """(N, K, height, width) ``sem_seg`` of each image, with the graph's deformable attention."""
    height, width = output_size or images.shape[-2:]
    inputs = [{"image": x, "height": height, "width": width} for x in images]
    with torch.no_grad(), force_reference_path():
        return torch.stack([r["sem_seg"] for r in model(inputs)])


@pytest.fixture(scope="module", params=list(LABEL_CASES))
def labels_case(request):
    test_flags, (height, width), output_size = LABEL_CASES[request.param]
    model = label_model(test_flags)
    images = torch.stack([make_image(height, width, seed=s) for s in (1, 2)])
    scores = eager_scores(model, images, output_size)
    return model, images, output_size, scores


def test_label_case_is_not_trivial(labels_case):
    """The eager label maps hold several classes, so a wrong crop or resize shows."""
    model, images, output_size, scores = labels_case
    assert scores.shape[-2:] == (output_size or images.shape[-2:])
    assert len(scores.argmax(1).unique()) >= 2


def test_semantic_labels_module_equals_eager(labels_case):
    model, images, output_size, scores = labels_case
    with torch.no_grad(), force_reference_path():
        labels = SemanticLabelsModel(model, output_size)(images)
    assert labels.dtype == torch.int64
    assert torch.equal(labels, scores.argmax(1))


def test_torch_export_with_postprocessing_equals_eager(labels_case):
    model, images, output_size, scores = labels_case
    program = export_program(model, images, postprocessing=True, output_size=output_size)
    assert torch.equal(program.module()(images), scores.argmax(1))


@pytest.mark.slow
def test_onnx_export_with_postprocessing_equals_eager(labels_case, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in the test extras")
    model, images, output_size, scores = labels_case
    path = export_onnx(
        model, images, str(tmp_path / "labels.onnx"), postprocessing=True, output_size=output_size
    )
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["labels"]
    (labels,) = session.run(None, {"images": images.numpy()})
    labels = torch.from_numpy(labels)
    assert labels.shape == scores.argmax(1).shape
    # ONNX Runtime's kernels round differently: a pixel may differ only where eager's top two
    # classes tie within float noise
    top2 = scores.topk(2, dim=1).values
    differ = labels != scores.argmax(1)
    assert (top2[:, 0] - top2[:, 1])[differ].le(TIE).all()


def test_output_size_needs_postprocessing():
    model = build_tiny_model("mask2former")
    with pytest.raises(ValueError, match="postprocessing=True"):
        export_program(model, make_image()[None], output_size=(32, 32))


def test_semantic_labels_module_refuses_a_bad_output_size():
    model = build_tiny_model("mask2former")
    with pytest.raises(ValueError, match="output_size"):
        SemanticLabelsModel(model, (0, 10))
