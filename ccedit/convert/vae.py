"""The KL-f8 VAE of a CCEdit checkpoint (`first_stage_model.*`, ldm names) -> diffusers `AutoencoderKL`.

The released checkpoints hold the unchanged SD-1.5 VAE under `first_stage_model.` (248 keys, ref §1). The ldm and
diffusers modules compute the same thing; only names differ, plus the mid-block attention, whose q/k/v/proj_out
are 1x1 convolutions in ldm and `nn.Linear` layers in diffusers.

TVI2V checkpoints store the same VAE a second time under `conditioner.embedders.2.first_stage_model.` because the
engine hands its VAE module to the key-frame embedder (ref §1 caveat 2). [`convert_vae`] checks that the copies
are identical and consumes both; if only the embedder copy exists, it is converted instead.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import AutoencoderKL

from ..errors import UserError
from .keymap import KeyMapper, Rule, conv1x1_to_linear, expected_shapes, format_keys, strip_prefix

logger = logging.getLogger(__name__)

VAE_PREFIX = "first_stage_model."
# The VAE registered again under a conditioner embedder (TVI2V); the original loader renames these keys.
_EMBEDDER_VAE_PREFIX = re.compile(r"conditioner\.embedders\.\d+\.first_stage_model\.")

_RESNET_PARTS = {
    "norm1": "norm1",
    "conv1": "conv1",
    "norm2": "norm2",
    "conv2": "conv2",
    "nin_shortcut": "conv_shortcut",
}
_RESNET_PART = "(" + "|".join(_RESNET_PARTS) + ")"


def sd15_vae_config() -> dict[str, Any]:
    """Returns the `AutoencoderKL` config of the SD-1.5 KL-f8 VAE, the one CCEdit ships."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 512,
        "scaling_factor": 0.18215,
    }


def _vae_rules(num_levels: int) -> list[Rule]:
    """Renaming rules from ldm VAE names (prefix removed) to diffusers `AutoencoderKL` names.

    ldm numbers the decoder's levels from the highest resolution (`up.0`, run last) while diffusers numbers them in
    execution order (`up_blocks.0`, lowest resolution), hence `num_levels - 1 - i`.
    """

    def up_block(match: re.Match[str]) -> str:
        return f"decoder.up_blocks.{num_levels - 1 - int(match[1])}"

    def mid_resnet(match: re.Match[str]) -> str:
        # ldm's block_1 / block_2 are diffusers' resnets.0 / resnets.1.
        return f"{match[1]}.mid_block.resnets.{int(match[2]) - 1}.{_RESNET_PARTS[match[3]]}.{match[4]}"

    attention = r"(encoder|decoder)\.mid\.attn_1"
    return [
        Rule(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", r"\1.\2.\3"),
        Rule(r"(encoder|decoder)\.norm_out\.(weight|bias)", r"\1.conv_norm_out.\2"),
        Rule(r"(quant_conv|post_quant_conv)\.(weight|bias)", r"\1.\2"),
        Rule(
            rf"encoder\.down\.(\d+)\.block\.(\d+)\.{_RESNET_PART}\.(weight|bias)",
            lambda m: f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}",
        ),
        Rule(
            r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", r"encoder.down_blocks.\1.downsamplers.0.conv.\2"
        ),
        Rule(
            rf"decoder\.up\.(\d+)\.block\.(\d+)\.{_RESNET_PART}\.(weight|bias)",
            lambda m: f"{up_block(m)}.resnets.{m[2]}.{_RESNET_PARTS[m[3]]}.{m[4]}",
        ),
        Rule(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", lambda m: f"{up_block(m)}.upsamplers.0.conv.{m[2]}"),
        Rule(rf"(encoder|decoder)\.mid\.block_([12])\.{_RESNET_PART}\.(weight|bias)", mid_resnet),
        Rule(rf"{attention}\.norm\.(weight|bias)", r"\1.mid_block.attentions.0.group_norm.\2"),
        Rule(rf"{attention}\.(q|k|v)\.weight", r"\1.mid_block.attentions.0.to_\2.weight", conv1x1_to_linear),
        Rule(rf"{attention}\.(q|k|v)\.bias", r"\1.mid_block.attentions.0.to_\2.bias"),
        Rule(rf"{attention}\.proj_out\.weight", r"\1.mid_block.attentions.0.to_out.0.weight", conv1x1_to_linear),
        Rule(rf"{attention}\.proj_out\.bias", r"\1.mid_block.attentions.0.to_out.0.bias"),
    ]


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when two checkpoint tensors hold the same values; shared storage (the usual case) is free to check."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True
    return torch.equal(a, b)


def _check_copies(checkpoint: Mapping[str, torch.Tensor], reference: str, copies: list[str]) -> set[str]:
    """Verifies that the VAE under each prefix in `copies` equals the one under `reference`; returns their keys."""
    main = strip_prefix(checkpoint, reference)
    consumed = set()
    for prefix in copies:
        copy = strip_prefix(checkpoint, prefix)
        if copy.keys() != main.keys():
            raise UserError(
                f"cannot convert the VAE: its copy under {prefix!r} has other keys than the one under {reference!r} "
                f"({format_keys(copy.keys() ^ main.keys())})"
            )
        different = [key for key in main if not _same_tensor(main[key], copy[key])]
        if different:
            raise UserError(
                f"cannot convert the VAE: {len(different)} tensors under {prefix!r} differ from those under "
                f"{reference!r} ({format_keys(different)}); the checkpoint holds two different VAEs"
            )
        consumed.update(prefix + key for key in copy)
    return consumed


def convert_vae(
    checkpoint: Mapping[str, torch.Tensor], config: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Converts the VAE of a CCEdit checkpoint to a diffusers `AutoencoderKL` state dict.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`):
            The full checkpoint state dict, e.g. from [`~ccedit.convert.checkpoint.open_state_dict`].
        config (`Mapping[str, Any]`, *optional*):
            `AutoencoderKL` constructor arguments of the target. Defaults to [`sd15_vae_config`]; tests pass tiny
            ones. Names and shapes are checked against this model built on the meta device.

    Returns:
        `tuple[dict[str, torch.Tensor], set[str]]`: the `AutoencoderKL` state dict (tensors are views of the
        checkpoint's, in its dtype) and the checkpoint keys consumed, including an identical embedder copy.

    Raises:
        [`~ccedit.errors.UserError`]: no VAE keys, an unmapped source key, a missing target key, a shape
        mismatch, or two VAE copies that differ.
    """
    config = dict(sd15_vae_config() if config is None else config)
    embedder_prefixes = sorted({m.group(0) for key in checkpoint if (m := _EMBEDDER_VAE_PREFIX.match(key))})
    if any(key.startswith(VAE_PREFIX) for key in checkpoint):
        prefix, copies = VAE_PREFIX, embedder_prefixes
    elif embedder_prefixes:
        # Only the embedder's copy was saved: convert it, as the original loader renames it to first_stage_model.
        prefix, copies = embedder_prefixes[0], embedder_prefixes[1:]
    else:
        raise UserError(f"cannot convert the VAE: the checkpoint has no {VAE_PREFIX}* keys")
    duplicates = _check_copies(checkpoint, prefix, copies)

    mapper = KeyMapper(checkpoint, prefix, name="VAE")
    mapper.apply(_vae_rules(num_levels=len(config["block_out_channels"])))
    with torch.device("meta"):
        target = AutoencoderKL(**config)
    state_dict, consumed = mapper.finish(expected_shapes(target))
    if duplicates:
        logger.info("VAE: %d keys of the embedder copy equal %s* and were consumed with it", len(duplicates), prefix)
    return state_dict, consumed | duplicates
