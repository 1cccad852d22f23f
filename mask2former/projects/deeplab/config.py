"""``add_deeplab_config``: the DeepLab keys that Mask2Former's models and solver read."""

from __future__ import annotations

from mask2former.config import CfgNode, get_cfg
from mask2former.config.compat import add_missing_keys

# The keys of detectron2's add_deeplab_config that our code reads. The others configure
# DeepLab's own heads (MODEL.SEM_SEG_HEAD.ASPP_*, PROJECT_*, LOSS_TYPE, ...) and
# MODEL.RESNETS.RES4_DILATION; no model here reads them, so they are not added and a config
# that sets one fails to merge with an error naming the key.
DEEPLAB_KEYS = (
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
    "SOLVER.POLY_LR_POWER",
    "SOLVER.POLY_LR_CONSTANT_ENDING",
    "MODEL.RESNETS.STEM_TYPE",
    "MODEL.RESNETS.RES5_MULTI_GRID",
)


def add_deeplab_config(cfg: CfgNode) -> None:
    """Make sure ``cfg`` has the DeepLab keys in :data:`DEEPLAB_KEYS`; values already set
    are kept (our ``get_cfg()`` has them all, so on it this changes nothing).

    Unlike detectron2's, missing keys get our defaults: ``MODEL.RESNETS.STEM_TYPE`` "basic"
    and ``RES5_MULTI_GRID`` [1, 1, 1] rather than DeepLab's "deeplab" and [1, 2, 4]; every
    published Mask2Former / MaskFormer config sets both explicitly.
    """
    add_missing_keys(cfg, get_cfg(), DEEPLAB_KEYS)
