"""Mask2Former's video decoder: masked attention over every frame of a clip at once."""

from torch import Tensor

from ..position_encoding import PositionEmbeddingSine3D
from .build import TRANSFORMER_DECODER_REGISTRY
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder


@TRANSFORMER_DECODER_REGISTRY.register()
class VideoMultiScaleMaskedTransformerDecoder(MultiScaleMaskedTransformerDecoder):
    """:class:`MultiScaleMaskedTransformerDecoder` over clips: one query is one instance
    through all the frames of its clip (Mask2Former for video instance segmentation).

    The backbone and the pixel decoder see frames; this decoder sees clips. At each layer the
    queries of a clip attend to the pixels of all its frames at the layer's level, keys
    positioned by a 3-D sine embedding (:class:`PositionEmbeddingSine3D`: frame index, y, x)
    and restricted to the foreground of the previous prediction in every frame. Each query
    predicts one class for the clip and one mask per frame.

    ``forward(x: list of 3 (N*T, C_in, h_l, w_l), mask_features (N*T, mask_dim, H, W),
    mask=None, *, num_frames=T)``: the N*T frames are N clips of T consecutive frames. Returns
    ``{"pred_logits": (N, Q, K+1), "pred_masks": (N, Q, T, H, W), "aux_outputs": [...]}``.

    Same parameters, checkpoint keys and ``_version`` as the image decoder, so an image
    checkpoint loads as it is. The published decoder reads ``INPUT.SAMPLING_FRAME_NUM`` and
    takes the whole batch as one clip in eval mode; this one is told ``num_frames`` by its
    caller in either mode, so the clip length is the input's.
    """

    position_embedding = PositionEmbeddingSine3D

    def forward(
        self,
        x: list[Tensor],
        mask_features: Tensor,
        mask: Tensor | None = None,
        *,
        num_frames: int,
    ) -> dict[str, object]:
        self._check_inputs(x, mask)
        if num_frames < 1 or mask_features.shape[0] % num_frames:
            raise ValueError(
                f"{type(self).__name__}: {mask_features.shape[0]} frames do not make clips of "
                f"num_frames={num_frames}"
            )
        srcs, pos, sizes = self._flatten_clip_levels(x, num_frames)
        # (N*T, C, H, W) -> (N, T, C, H, W): the mask features of each clip
        clips = mask_features.unflatten(0, (-1, num_frames))
        return self._decode(srcs, pos, sizes, clips)

    def _flatten_clip_levels(
        self, x: list[Tensor], num_frames: int
    ) -> tuple[list[Tensor], list[Tensor], list]:
        """Per level: the clips' pixels as sources (T*hw, N, C) with the level embedding,
        their 3-D positions (T*hw, N, C), and the level's frame size (h, w)."""
        srcs, pos, sizes = [], [], []
        for lvl in range(self.num_feature_levels):
            sizes.append(tuple(x[lvl].shape[-2:]))
            # (N*T, C_in, h, w) -> (N, T, C_in, h, w) -> positions (N, T, C, hw)
            frames = x[lvl].unflatten(0, (-1, num_frames))
            pos.append(_clip_sequence(self.pe_layer(frames).flatten(3)))
            src = self._project(x[lvl], lvl).unflatten(0, (-1, num_frames))
            srcs.append(_clip_sequence(src))
        return srcs, pos, sizes


def _clip_sequence(x: Tensor) -> Tensor:
    """(N, T, C, hw) -> (T*hw, N, C): each clip's pixels, frame after frame, sequence-first."""
    return x.permute(1, 3, 0, 2).flatten(0, 1)
