"""Loading head weights saved before the pixel decoder became a submodule."""

import logging

logger = logging.getLogger(__name__)


def move_legacy_pixel_decoder_keys(state_dict: dict, prefix: str, kept: tuple[str, ...]) -> None:
    """Rename ``{prefix}X`` to ``{prefix}pixel_decoder.X`` in place, for old head checkpoints.

    MaskFormer's first checkpoints kept the pixel decoder's weights directly under the head
    (``sem_seg_head.adapter_1.weight``); the published code moves them on load. Keys already
    under ``pixel_decoder.`` or under one of ``kept`` (e.g. ``predictor.``) stay as they are,
    so a current checkpoint is never renamed twice.
    """
    keep = tuple(prefix + name for name in ("pixel_decoder.",) + kept)
    legacy = [k for k in state_dict if k.startswith(prefix) and not k.startswith(keep)]
    for key in legacy:
        state_dict[prefix + "pixel_decoder." + key[len(prefix) :]] = state_dict.pop(key)
    if legacy:
        logger.warning(
            "%d head weights in the pre-pixel_decoder layout (e.g. %s) were moved under "
            "%spixel_decoder.",
            len(legacy),
            legacy[0],
            prefix,
        )
