"""torch.export and ONNX export of the R50 Mask2Former logits graph match eager."""

import pytest
import torch

from mask2former.config import get_cfg
from mask2former.export import LogitsModel, export_onnx, export_program
from mask2former.modeling import build_model
from tests.modeling.tiny import CONFIG_DIR, CONFIGS

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
