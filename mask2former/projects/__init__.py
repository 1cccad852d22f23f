"""detectron2's ``projects`` that official Mask2Former / MaskFormer import from.

``projects.deeplab``: ``add_deeplab_config``, ``build_lr_scheduler`` (``WarmupPolyLR``);
``projects.point_rend``: ``ColorAugSSDTransform``. Only these parts are provided: DeepLab
and PointRend models are not.
"""
