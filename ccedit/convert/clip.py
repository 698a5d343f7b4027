"""The CLIP text encoder of a CCEdit checkpoint (`conditioner.embedders.0.transformer.*`) -> transformers.

The checkpoint holds a transformers `CLIPTextModel` (openai ViT-L/14 text tower, 197 keys, ref §1) as saved by the
transformers 4.x of the release: every name has a `text_model.` level, and the `embeddings.position_ids` buffer
is stored. transformers 5 dropped that level and no longer saves `position_ids`. [`convert_clip`] therefore asks
the installed transformers for its own names (a `CLIPTextModel` built on the meta device) and adapts to them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from transformers import CLIPTextConfig, CLIPTextModel

from .keymap import KeyMapper, expected_shapes

logger = logging.getLogger(__name__)

CLIP_PREFIX = "conditioner.embedders.0.transformer."
_LEVEL = "text_model."
_POSITION_IDS = "embeddings.position_ids"


def clip_text_config() -> CLIPTextConfig:
    """Returns the text config of openai CLIP ViT-L/14, the SD-1.5 text encoder that CCEdit ships."""
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        projection_dim=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        # The published config's token ids; eos_token_id=2 makes transformers pool at the highest token id, which
        # is the end-of-text token of the CLIP tokenizer.
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )


def convert_clip(
    checkpoint: Mapping[str, torch.Tensor], config: CLIPTextConfig | None = None
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Converts the CLIP text encoder of a CCEdit checkpoint to a transformers `CLIPTextModel` state dict.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`):
            The full checkpoint state dict, e.g. from [`~ccedit.convert.checkpoint.open_state_dict`].
        config (`CLIPTextConfig`, *optional*):
            Config of the target model. Defaults to [`clip_text_config`]; tests pass tiny ones. Names and shapes
            are checked against a `CLIPTextModel` of the installed transformers, built on the meta device.

    Returns:
        `tuple[dict[str, torch.Tensor], set[str]]`: the `CLIPTextModel` state dict (tensors are the checkpoint's,
        in its dtype) and the checkpoint keys consumed. A stored `position_ids` buffer is consumed and dropped when
        the installed transformers does not save it, and made up (`0..76`) when it does but the file lacks it.

    Raises:
        [`~ccedit.errors.UserError`]: an unmapped source key, a missing target key or a shape mismatch.
    """
    config = clip_text_config() if config is None else config
    with torch.device("meta"):
        target = CLIPTextModel(config)
    expected = expected_shapes(target)
    # transformers 4.x names everything "text_model.<name>"; 5.x just "<name>".
    level = _LEVEL if any(key.startswith(_LEVEL) for key in expected) else ""

    mapper = KeyMapper(checkpoint, CLIP_PREFIX, name="CLIP text encoder")
    for key in mapper.remaining():
        name = key.removeprefix(_LEVEL)
        if name == _POSITION_IDS and level + name not in expected:
            mapper.drop(key, "position_ids is not a saved buffer in this transformers version")
            continue
        mapper.copy(key, level + name)
    if level + _POSITION_IDS in expected and level + _POSITION_IDS not in mapper.state_dict:
        mapper.put(level + _POSITION_IDS, torch.arange(config.max_position_embeddings).unsqueeze(0))
    return mapper.finish(expected)
