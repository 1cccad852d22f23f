"""Mask2Former and MaskFormer: universal image segmentation on PyTorch.

``mask2former.Predictor(cfg)`` (alias ``DefaultPredictor``) gives predictions from Python;
``tools/train_net.py`` trains and evaluates; see README.md.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: importing the package stays cheap and free of heavy imports.
    if name in ("Predictor", "DefaultPredictor"):
        from .engine.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mask2former' has no attribute {name!r}")
