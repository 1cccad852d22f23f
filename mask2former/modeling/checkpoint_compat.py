"""Loading weights saved in the older key layouts that the published code still reads.

A module whose key layout changed records a class attribute ``_version``; torch stores it
per module in ``state_dict._metadata[prefix]["version"]`` and hands it back as
``local_metadata`` to the module's ``_load_from_state_dict``. The published modules treat a
checkpoint whose version is missing or older than theirs as the old layout and rename its
keys; so do ours (:func:`predates`). Unlike the published renames, ours leave keys that are
already in the current layout alone: a current state dict that carries no versions (a plain
dict, a ``.safetensors`` file, our checkpoints saved before the versions were recorded)
still loads as it is. Ours also rename only keys under the module's own prefix (the
published ones scan the whole state dict for ``sem_seg_head`` / ``static_query``).
"""

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)

#: Head ``_version`` from which the pixel decoder's weights sit under ``pixel_decoder.``
#: (published MaskFormerHead, PerPixelBaselineHead and PerPixelBaselinePlusHead).
HEAD_PIXEL_DECODER_VERSION = 2
#: MultiScaleMaskedTransformerDecoder ``_version`` from which the learned query features are
#: ``query_feat`` (``static_query`` before).
DECODER_QUERY_FEAT_VERSION = 2


def predates(local_metadata: Mapping, version: int) -> bool:
    """True when the checkpoint recorded no version for this module, or one below ``version``.

    The published ``_load_from_state_dict`` methods decide the same way:
    ``version is None or version < current``.
    """
    recorded = local_metadata.get("version")
    return recorded is None or recorded < version


def rename_keys(state_dict: dict, renames: dict[str, str], owner: str) -> None:
    """Apply ``renames`` (old key -> new key) to ``state_dict`` in place, and log them once.

    Raises ValueError naming both keys when the new key is already present: the checkpoint
    then holds two values for one weight and neither can be chosen silently.
    """
    for old, new in renames.items():
        if new in state_dict:
            raise ValueError(
                f"{owner}: the checkpoint has both {old!r} (older layout) and {new!r} "
                "(current layout) for the same weight"
            )
        state_dict[new] = state_dict.pop(old)
    if renames:
        old, new = next(iter(renames.items()))
        logger.warning(
            "%s: %d weights in an older layout were renamed on load (e.g. %s -> %s)",
            owner,
            len(renames),
            old,
            new,
        )


def move_legacy_pixel_decoder_keys(state_dict: dict, prefix: str, kept: tuple[str, ...]) -> None:
    """Rename ``{prefix}X`` to ``{prefix}pixel_decoder.X`` in place, for old head checkpoints.

    MaskFormer's first checkpoints kept the pixel decoder's weights directly under the head
    (``sem_seg_head.adapter_1.weight``); the published heads (``_version`` 2) move them on
    load when the checkpoint's head version is below 2. Keys already under
    ``pixel_decoder.`` or under one of ``kept`` (e.g. ``predictor.``) stay as they are, so a
    current checkpoint is never renamed twice.
    """
    keep = tuple(prefix + name for name in ("pixel_decoder.",) + kept)
    renames = {
        k: prefix + "pixel_decoder." + k[len(prefix) :]
        for k in state_dict
        if k.startswith(prefix) and not k.startswith(keep)
    }
    rename_keys(state_dict, renames, prefix.rstrip(".") or "head")


def rename_static_query(state_dict: dict, prefix: str) -> None:
    """Rename ``{prefix}static_query.*`` to ``{prefix}query_feat.*`` in place.

    Mask2Former's decoder called its learned query features ``static_query`` before
    ``_version`` 2.
    """
    old_prefix, new_prefix = prefix + "static_query.", prefix + "query_feat."
    renames = {k: new_prefix + k[len(old_prefix) :] for k in state_dict if k.startswith(old_prefix)}
    rename_keys(state_dict, renames, prefix.rstrip(".") or "decoder")


class PixelDecoderHeadLayout:
    """Mixin for heads whose pixel decoder is the submodule ``pixel_decoder`` (published
    ``_version`` 2): records that version and moves an older checkpoint's pixel-decoder keys
    under ``pixel_decoder.`` on load (``predictor.`` keys stay)."""

    _version = HEAD_PIXEL_DECODER_VERSION

    def _load_from_state_dict(
        self, state_dict: dict, prefix: str, local_metadata: dict, *args: object
    ) -> None:
        if predates(local_metadata, HEAD_PIXEL_DECODER_VERSION):
            move_legacy_pixel_decoder_keys(state_dict, prefix, kept=("predictor.",))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)
