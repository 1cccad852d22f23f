"""Conversion between Hugging Face ``transformers`` checkpoints and ours, both directions.

Ours is the published Mask2Former / MaskFormer layout (detectron2 key names, e.g.
``sem_seg_head.predictor.class_embed.weight``). Supported on the Hugging Face side:

- ``Mask2FormerForUniversalSegmentation`` (model_type "mask2former") with a Swin
  (``SwinBackbone``) or ResNet (``ResNetBackbone``) backbone;
- ``MaskFormerForInstanceSegmentation`` (model_type "maskformer") with a Swin
  (``MaskFormerSwinBackbone``) or ResNet backbone and its DETR decoder.

- :mod:`.keys`: the key renames, an ordered list of regular expressions per direction;
- :mod:`.state_dict`: state dicts renamed by them, attention projections fused / split;
- :mod:`.config`: config.json <-> our config;
- :mod:`.components`: which transformers model our config is, from its components' classes;
- :mod:`.convert`: directories (:func:`convert_hf_to_ours`, :func:`convert_ours_to_hf`).
"""

from mask2former.modeling.backbone.swin import relative_position_index

from .config import cfg_to_hf_config, class_names, hf_config_to_cfg
from .convert import CONFIG_NAME, WEIGHTS_NAME, convert_hf_to_ours, convert_ours_to_hf, read_weights
from .errors import ConversionError
from .state_dict import hf_to_ours_state_dict, ours_to_hf_state_dict

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ConversionError",
    "cfg_to_hf_config",
    "class_names",
    "convert_hf_to_ours",
    "convert_ours_to_hf",
    "hf_config_to_cfg",
    "hf_to_ours_state_dict",
    "ours_to_hf_state_dict",
    "read_weights",
    "relative_position_index",
]
