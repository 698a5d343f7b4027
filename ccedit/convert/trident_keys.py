"""Map CCEdit's network keys (ldm/sgm names) onto ccedit's modules: base UNet, temporal adapter, ControlNet, appearance.

The original video UNet keeps SD-1.5's ldm names for its spatial layers and adds every temporal tensor inside the
same blocks (ref §1, §2). This module enumerates the ldm block indices of an SD-shaped UNet, pairs each with its
diffusers block, and writes the renames inside it as `keymap.Rule`s, mapped by one `keymap.KeyMapper` onto the
trident's one namespace (`unet.*`, `temporal.*`, `controlnet.*`, `appearance.*`); every source key must be claimed
exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from ..errors import UserError
from ..models.geometry import Geometry
from .keymap import KeyMapper, Rule

# Tensor renames inside a ResBlock: ldm -> diffusers ResnetBlock2D (spatial) or TemporalResnet (temporal).
RESNET_SPATIAL = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
RESNET_TEMPORAL = {
    "in_layers_temporal.0": "in_layers.norm",
    "in_layers_temporal.2": "in_layers.conv",
    "out_layers_temporal.0": "out_layers.norm",
    "out_layers_temporal.3": "out_layers.conv",
    "skip_connection_temporal": "skip",
}
# Inside a spatial transformer: the temporal and cross-frame ("cfca") parts go to TemporalAttention.
ATTENTION_TEMPORAL = {
    "norm_temporal_ca": "cross_frame.norm",
    "proj_in_temporal_ca": "cross_frame.proj_in",
    "proj_out_temporal_ca": "cross_frame.proj_out",
    "transformer_blocks_temporal_ca.0": "cross_frame.block",
    "norm_temporal": "temporal.norm",
    "proj_in_temporal": "temporal.proj_in",
    "proj_out_temporal": "temporal.proj_out",
    "transformer_blocks_temporal.0": "temporal.block",
}
HINT_BLOCK = {0: "conv_in", 14: "conv_out", **{2 * i + 2: f"blocks.{i}" for i in range(6)}}


@dataclass
class UNetLayout:
    """The block structure shared by the main UNet and both ControlNet encoders (SD-1.5 shaped)."""

    levels: int
    layers_per_block: int
    attention_levels: tuple[bool, ...]

    def input_blocks(self) -> list[tuple[str, str]]:
        """`(ldm input block index as str, kind@diffusers prefix)` for every encoder block; index 0 is conv_in."""
        blocks = [("0", "conv_in@")]
        n = 1
        for i in range(self.levels):
            for j in range(self.layers_per_block):
                blocks.append((f"{n}.0", f"resnet@down_blocks.{i}.resnets.{j}"))
                if self.attention_levels[i]:
                    blocks.append((f"{n}.1", f"attention@down_blocks.{i}.attentions.{j}"))
                n += 1
            if i < self.levels - 1:
                blocks.append((f"{n}.0", f"downsample@down_blocks.{i}.downsamplers.0"))
                n += 1
        return blocks

    def num_input_blocks(self) -> int:
        return 1 + self.levels * self.layers_per_block + self.levels - 1

    def output_blocks(self) -> list[tuple[str, str]]:
        blocks = []
        n = 0
        for i in range(self.levels):
            level = self.levels - 1 - i
            for j in range(self.layers_per_block + 1):
                blocks.append((f"{n}.0", f"resnet@up_blocks.{i}.resnets.{j}"))
                sub = 1
                if self.attention_levels[level]:
                    blocks.append((f"{n}.1", f"attention@up_blocks.{i}.attentions.{j}"))
                    sub = 2
                if j == self.layers_per_block and i < self.levels - 1:
                    blocks.append((f"{n}.{sub}", f"upsample@up_blocks.{i}.upsamplers.0"))
                n += 1
        return blocks

    @staticmethod
    def middle_blocks() -> list[tuple[str, str]]:
        return [("0", "resnet@mid_block.resnets.0"), ("1", "attention@mid_block.attentions.0"),
                ("2", "resnet@mid_block.resnets.1")]


def unet_layout(geometry: Geometry) -> UNetLayout:
    """The block structure of a geometry's UNet and ControlNets, which the key mapping walks."""
    return UNetLayout(len(geometry.channel_mult), geometry.num_res_blocks, geometry.attention_levels)


@dataclass
class MappedState:
    """The result of a mapping: one state dict per target component, and the source keys it used."""

    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)

    @classmethod
    def from_mapper(cls, mapper: KeyMapper) -> MappedState:
        """Split a mapper's targets, named `component.key` (the trident's one namespace), by component."""
        out = cls(consumed=mapper.consumed)
        for key, tensor in mapper.state_dict.items():
            component, name = key.split(".", 1)
            out.components.setdefault(component, {})[name] = tensor
        return out


def _rename(old: str, new: str) -> Rule:
    """The tensors of ldm module `old` (or the tensor `old` itself) under the name `new`, suffixes kept."""
    return Rule(rf"{re.escape(old)}((?:\..+)?)", new + r"\1")


def _block_rules(block: str, kind: str, path: str, component: str, *, temporal: bool) -> list[Rule]:
    """The rules of one ldm block (`input_blocks.4.1`), of `kind`, that becomes diffusers' `path` in `component`;
    with `temporal`, its temporal tensors go to the temporal adapter first."""
    rules = []
    if kind == "resnet":
        if temporal:
            rules += [_rename(f"{block}.{old}", f"temporal.{path}.{new}") for old, new in RESNET_TEMPORAL.items()]
        rules += [_rename(f"{block}.{old}", f"{component}.{path}.{new}") for old, new in RESNET_SPATIAL.items()]
    elif kind == "attention":
        if temporal:
            rules += [_rename(f"{block}.{old}", f"temporal.{path}.{new}") for old, new in ATTENTION_TEMPORAL.items()]
        # diffusers' Transformer2DModel keeps ldm's names (norm, proj_in, transformer_blocks, ...)
        rules.append(_rename(block, f"{component}.{path}"))
    elif kind in ("downsample", "upsample"):
        if temporal:  # the adapter's one resampler per level: down_blocks.1.downsamplers.0 -> down_blocks.1.resampler
            rules.append(_rename(f"{block}.conv_temporal", f"temporal.{path.rsplit('.', 2)[0]}.resampler"))
        rules += [_rename(f"{block}.{conv}", f"{component}.{path}.conv") for conv in ("op", "conv")]
    return rules


def _blocks_rules(groups: list[tuple[str, list[tuple[str, str]]]], component: str, *, source: str = "",
                  temporal: bool) -> list[Rule]:
    """`_block_rules` of every block of the ldm block groups (`("input_blocks", layout.input_blocks())`, ...)."""
    rules = []
    for group, blocks in groups:
        for position, spec in blocks:
            kind, path = spec.split("@")
            if kind != "conv_in":  # a fixed rename of each network
                rules += _block_rules(f"{source}{group}.{position}", kind, path, component, temporal=temporal)
    return rules


def video_unet_rules(layout: UNetLayout) -> list[Rule]:
    """The main video UNet's tensors -> `unet.*` (SD-1.5's spatial layers) and `temporal.*` (the adapter)."""
    fixed = [
        _rename("time_embed.0", "unet.time_embedding.linear_1"),
        _rename("time_embed.2", "unet.time_embedding.linear_2"),
        _rename("input_blocks.0.0", "unet.conv_in"),
        _rename("out.0", "unet.conv_norm_out"),
        _rename("out.2", "unet.conv_out"),
        _rename("input_blocks_temporal.0", "temporal.conv_in"),
        _rename("out_temporal.1", "temporal.conv_out"),
    ]
    groups = [("input_blocks", layout.input_blocks()), ("middle_block", UNetLayout.middle_blocks()),
              ("output_blocks", layout.output_blocks())]
    return fixed + _blocks_rules(groups, "unet", temporal=True)


def controlnet_rules(layout: UNetLayout, source: str, component: str, *, appearance: bool = False) -> list[Rule]:
    """An ldm/cldm ControlNet under `source` -> diffusers `ControlNetModel` or ccedit's `AppearanceEncoder`.

    Both share the encoder layout, `zero_convs.N.0 -> controlnet_down_blocks.N` and
    `middle_block_out.0 -> controlnet_mid_block`; the structure ControlNet also has the 8-conv hint encoder.
    """
    rules = [
        _rename(f"{source}time_embed.0", f"{component}.time_embedding.linear_1"),
        _rename(f"{source}time_embed.2", f"{component}.time_embedding.linear_2"),
        _rename(f"{source}input_blocks.0.0", f"{component}.conv_in"),
        Rule(rf"{re.escape(source)}zero_convs\.(\d+)\.0\.(.+)", component + r".controlnet_down_blocks.\1.\2"),
        _rename(f"{source}middle_block_out.0", f"{component}.controlnet_mid_block"),
    ]
    if not appearance:
        rules += [_rename(f"{source}input_hint_block.{index}", f"{component}.controlnet_cond_embedding.{name}")
                  for index, name in HINT_BLOCK.items()]
    groups = [("input_blocks", layout.input_blocks()), ("middle_block", UNetLayout.middle_blocks())]
    return rules + _blocks_rules(groups, component, source=source, temporal=False)


def map_trident(state: Mapping[str, torch.Tensor], layout: UNetLayout, prefix: str, *,
                appearance: bool) -> MappedState:
    """Map the networks under `prefix` (main video UNet, `controlnet.`, with `appearance` `controlnet_img.`) onto
    the components `unet`, `temporal`, `controlnet` and `appearance`; keys no rule claims stay unconsumed."""
    mapper = KeyMapper(state, prefix, name="CCEdit network")
    rules = video_unet_rules(layout) + controlnet_rules(layout, "controlnet.", "controlnet")
    if appearance:
        rules += controlnet_rules(layout, "controlnet_img.", "appearance", appearance=True)
    mapper.apply(rules)
    return MappedState.from_mapper(mapper)


def check_complete(state_keys, out: MappedState, targets: dict[str, dict[str, tuple[int, ...]]], source: str) -> None:
    """Fail with one line when a source key was not mapped, or a target tensor is missing or has another shape.

    Args:
        state_keys: every key the source holds that should have been mapped.
        targets: per component, the expected `{name: shape}` of the module the component loads into.
    """
    unmapped = sorted(set(state_keys) - out.consumed)
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} unexpected keys (e.g. {', '.join(unmapped[:5])})")
    for component, expected in targets.items():
        got = out.components.get(component, {})
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if tuple(got[k].shape) != tuple(expected[k]))
        if missing:
            problems.append(f"{component}: {len(missing)} missing keys (e.g. {', '.join(missing[:5])})")
        if extra:
            problems.append(f"{component}: {len(extra)} keys the model does not have (e.g. {', '.join(extra[:5])})")
        if wrong:
            k = wrong[0]
            problems.append(
                f"{component}: {len(wrong)} shape mismatches (e.g. {k}: file {tuple(got[k].shape)}, model {tuple(expected[k])})"
            )
    if problems:
        raise UserError(f"{source} does not match the CCEdit network: " + "; ".join(problems))
