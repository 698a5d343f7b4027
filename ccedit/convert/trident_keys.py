"""Map CCEdit's network keys (ldm/sgm names) onto ccedit's modules: base UNet, temporal adapter, ControlNet, appearance.

The original video UNet keeps SD-1.5's ldm names for its spatial layers and adds every temporal tensor inside the
same blocks (ref §1, §2). This module enumerates the ldm block indices of an SD-shaped UNet, pairs each with its
diffusers block, and renames the tensors inside it; every source key must be claimed exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from ..errors import UserError

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
        return [("0", "resnet@mid_block.resnets.0"), ("1", "attention@mid_block.attentions.0"), ("2", "resnet@mid_block.resnets.1")]


@dataclass
class MappedState:
    """The result of a mapping: one state dict per target component, and the source keys it used."""

    components: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    consumed: set[str] = field(default_factory=set)

    def put(self, component: str, key: str, tensor: torch.Tensor, source_key: str) -> None:
        target = self.components.setdefault(component, {})
        if key in target:
            raise AssertionError(f"two source keys map to {component}:{key}")
        target[key] = tensor
        self.consumed.add(source_key)


def _split(rest: str, renames: dict[str, str]) -> tuple[str, str] | None:
    """Find the rename whose ldm name prefixes `rest` (longest first); return (new name, remainder)."""
    for old in sorted(renames, key=len, reverse=True):
        if rest == old or rest.startswith(old + "."):
            return renames[old], rest[len(old) :]
    return None


def _map_block(kind: str, rest: str, *, temporal: bool) -> tuple[str, str] | None:
    """Rename a tensor inside one ldm block. Returns ("unet"|"temporal", name relative to the block) or None."""
    if kind == "resnet":
        hit = _split(rest, RESNET_TEMPORAL) if temporal else None
        if hit:
            return "temporal", hit[0] + hit[1]
        hit = _split(rest, RESNET_SPATIAL)
        return ("unet", hit[0] + hit[1]) if hit else None
    if kind == "attention":
        hit = _split(rest, ATTENTION_TEMPORAL) if temporal else None
        if hit:
            return "temporal", hit[0] + hit[1]
        return "unet", rest  # diffusers' Transformer2DModel keeps ldm's names (norm, proj_in, transformer_blocks...)
    if kind in ("downsample", "upsample"):
        if temporal and rest.startswith("conv_temporal."):
            return "temporal", "RESAMPLER" + rest[len("conv_temporal") :]
        if rest.startswith(("op.", "conv.")):
            return "unet", "conv." + rest.split(".", 1)[1]
    return None


def _block_index(groups: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, tuple[str, str]]:
    """`{"input_blocks.4.1": ("attention", "down_blocks.1.attentions.0"), ...}` for the given ldm block groups."""
    index = {}
    for group, blocks in groups:
        for position, spec in blocks:
            kind, path = spec.split("@")
            if kind != "conv_in":
                index[f"{group}.{position}"] = (kind, path)
    return index


def _temporal_block_path(diffusers_path: str, kind: str) -> str:
    """down_blocks.1.downsamplers.0 -> down_blocks.1.resampler; resnets/attentions keep their path."""
    if kind in ("downsample", "upsample"):
        return diffusers_path.rsplit(".", 2)[0] + ".resampler"
    return diffusers_path


def map_video_unet(state: dict[str, torch.Tensor], layout: UNetLayout, prefix: str, out: MappedState) -> None:
    """Map the main video UNet's tensors under `prefix` into `out.components["unet"]` and `["temporal"]`."""
    groups = [
        ("input_blocks", layout.input_blocks()),
        ("middle_block", UNetLayout.middle_blocks()),
        ("output_blocks", layout.output_blocks()),
    ]
    fixed = {
        "time_embed.0": ("unet", "time_embedding.linear_1"),
        "time_embed.2": ("unet", "time_embedding.linear_2"),
        "input_blocks.0.0": ("unet", "conv_in"),
        "out.0": ("unet", "conv_norm_out"),
        "out.2": ("unet", "conv_out"),
        "input_blocks_temporal.0": ("temporal", "conv_in"),
        "out_temporal.1": ("temporal", "conv_out"),
    }
    block_index = _block_index(groups)
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.startswith(("controlnet.", "controlnet_img.")):
            continue
        hit = _split(name, {k: k for k in fixed})
        if hit:
            component, new = fixed[hit[0]]
            out.put(component, new + hit[1], tensor, key)
            continue
        m = re.match(r"^((?:input_blocks|output_blocks)\.\d+\.\d+|middle_block\.\d+)\.(.+)$", name)
        if not m or m.group(1) not in block_index:
            continue  # left unconsumed: reported by the caller
        kind, path = block_index[m.group(1)]
        mapped = _map_block(kind, m.group(2), temporal=True)
        if mapped is None:
            continue
        component, rel = mapped
        if component == "temporal":
            base = _temporal_block_path(path, kind)
            new = base + rel[len("RESAMPLER") :] if rel.startswith("RESAMPLER") else f"{base}.{rel}"
        else:
            new = f"{path}.{rel}"
        out.put(component, new, tensor, key)


def map_controlnet(state, layout: UNetLayout, prefix: str, component: str, out: MappedState, *, appearance=False):
    """Map an ldm/cldm ControlNet under `prefix` onto diffusers `ControlNetModel` or ccedit's `AppearanceEncoder`.

    Both share the encoder layout, `zero_convs.N.0 -> controlnet_down_blocks.N` and
    `middle_block_out.0 -> controlnet_mid_block`; the structure ControlNet also has the 8-conv hint encoder.
    """
    block_index = _block_index([("input_blocks", layout.input_blocks()), ("middle_block", UNetLayout.middle_blocks())])
    for key, tensor in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        new = None
        if name.startswith("time_embed.0."):
            new = "time_embedding.linear_1." + name.split(".", 2)[2]
        elif name.startswith("time_embed.2."):
            new = "time_embedding.linear_2." + name.split(".", 2)[2]
        elif name.startswith("input_blocks.0.0."):
            new = "conv_in." + name.split(".", 3)[3]
        elif m := re.match(r"^zero_convs\.(\d+)\.0\.(.+)$", name):
            new = f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"
        elif m := re.match(r"^middle_block_out\.0\.(.+)$", name):
            new = f"controlnet_mid_block.{m.group(1)}"
        elif (m := re.match(r"^input_hint_block\.(\d+)\.(.+)$", name)) and not appearance:
            if int(m.group(1)) in HINT_BLOCK:
                new = f"controlnet_cond_embedding.{HINT_BLOCK[int(m.group(1))]}.{m.group(2)}"
        elif m := re.match(r"^((?:input_blocks)\.\d+\.\d+|middle_block\.\d+)\.(.+)$", name):
            if m.group(1) in block_index:
                kind, path = block_index[m.group(1)]
                mapped = _map_block(kind, m.group(2), temporal=False)
                if mapped is not None:
                    new = f"{path}.{mapped[1]}"
        if new is not None:
            out.put(component, new, tensor, key)


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
