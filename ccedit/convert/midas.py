"""The MiDaS v3 DPT-Hybrid depth estimator of a CCEdit checkpoint -> transformers `DPTForDepthEstimation`.

CCEdit's TV2V engine estimates depth inside the model, so its checkpoint carries MiDaS under
`conditioner.embedders.1.model.model.` (368 keys, ref §1): a timm ViT-hybrid backbone (ResNetV2-50 stem and three
stages, then ViT-B/16 at 384 px) with MiDaS' reassemble ("act_postprocess"), fusion ("refinenet") and head
("output_conv") layers. transformers' DPT-Hybrid is the same network under other names, so once converted the
depth maps need neither timm nor the MiDaS code.

Name correspondence (MiDaS / timm -> transformers), worked out from both module trees and checked shape by shape:

- `pretrained.model.{cls_token,pos_embed}` -> `dpt.embeddings.{cls_token,position_embeddings}`
- `pretrained.model.patch_embed.backbone.stem.{conv,norm}` -> `dpt.embeddings.backbone.bit.embedder.{convolution,norm}`
- `….backbone.stages.S.blocks.B.*` -> `dpt.embeddings.backbone.bit.encoder.stages.S.layers.B.*`
- `pretrained.model.patch_embed.proj` -> `dpt.embeddings.projection`
- `pretrained.model.blocks.L.attn.qkv` (fused) -> `dpt.encoder.layer.L.attention.attention.{query,key,value}`
- `pretrained.model.blocks.L.{norm1,attn.proj,norm2,mlp.fc1,mlp.fc2}` ->
  `dpt.encoder.layer.L.{layernorm_before,attention.output.dense,layernorm_after,intermediate.dense,output.dense}`
- `pretrained.model.norm` -> `dpt.layernorm` (computed but unused by both)
- `pretrained.model.head` -> nothing: timm's ImageNet classifier, never run by MiDaS, is dropped
- `pretrained.act_postprocessN.{0.project.0,3,4}` ->
  `neck.reassemble_stage.{readout_projects.N-1.0,layers.N-1.projection,layers.N-1.resize}`
- `scratch.layerN_rn` -> `neck.convs.N-1`
- `scratch.refinenetN.{out_conv,resConfUnitR.convC}` ->
  `neck.fusion_stage.layers.4-N.{projection,residual_layerR.convolutionC}`
- `scratch.output_conv.{0,2,4}` -> `head.head.{0,2,4}`

MiDaS numbers its fusion blocks by resolution (`refinenet1` is the finest; `refinenet4` runs first, on the deepest
features); transformers numbers them in execution order, hence `4 - N`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch
from transformers import DPTConfig, DPTForDepthEstimation

from .keymap import KeyMapper, Rule, expected_shapes

logger = logging.getLogger(__name__)

MIDAS_PREFIX = "conditioner.embedders.1.model.model."


def dpt_hybrid_config() -> DPTConfig:
    """Returns the transformers config of MiDaS v3 DPT-Hybrid (as Intel/dpt-hybrid-midas), matching CCEdit's weights.

    The numbers follow from the checkpoint's shapes: a 768-wide, 12-layer ViT on a 24x24 grid of 16-pixel patches
    (577 position embeddings), fed by a ResNetV2 (BiT) with 3, 4 and 9 bottleneck blocks whose 1024-channel output
    is projected to tokens; reassembly takes the first two ResNet stages (256 and 512 channels) and ViT layers 8
    and 11, projects the readout token, keeps 768 channels and halves the resolution of the last one.
    """
    return DPTConfig(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        hidden_act="gelu",
        # timm's ViT, which the checkpoint was trained with, uses 1e-6; DPTConfig's default is 1e-12.
        layer_norm_eps=1e-6,
        image_size=384,
        patch_size=16,
        num_channels=3,
        qkv_bias=True,
        is_hybrid=True,
        backbone_config={
            "layer_type": "bottleneck",
            "depths": [3, 4, 9],
            "out_features": ["stage1", "stage2", "stage3"],
            # timm's ResNetV2 in the hybrid pads "same" and standardises its convolution weights.
            "global_padding": "same",
            "embedding_dynamic_padding": True,
        },
        backbone_featmap_shape=[1, 1024, 24, 24],
        # Indices 2 and 3 select ViT layers 8 and 11; stages 0 and 1 come from the ResNet instead.
        backbone_out_indices=[2, 5, 8, 11],
        neck_ignore_stages=[0, 1],
        readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[256, 512, 768, 768],
        fusion_hidden_size=256,
        head_in_index=-1,
        use_batch_norm_in_fusion_residual=False,
        add_projection=False,
    )


def _midas_rules(num_fusion_layers: int) -> list[Rule]:
    """Renaming rules from MiDaS names (prefix removed) to transformers `DPTForDepthEstimation` names."""
    vit = r"pretrained\.model"
    bit = "dpt.embeddings.backbone.bit"

    def fusion_layer(match: re.Match[str]) -> str:
        return f"neck.fusion_stage.layers.{num_fusion_layers - int(match[1])}"

    return [
        Rule(rf"{vit}\.cls_token", "dpt.embeddings.cls_token"),
        Rule(rf"{vit}\.pos_embed", "dpt.embeddings.position_embeddings"),
        Rule(rf"{vit}\.patch_embed\.backbone\.stem\.conv\.weight", f"{bit}.embedder.convolution.weight"),
        Rule(rf"{vit}\.patch_embed\.backbone\.stem\.norm\.(weight|bias)", rf"{bit}.embedder.norm.\1"),
        Rule(
            rf"{vit}\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\."
            r"((?:conv|norm)[123]|downsample\.(?:conv|norm))\.(weight|bias)",
            rf"{bit}.encoder.stages.\1.layers.\2.\3.\4",
        ),
        Rule(rf"{vit}\.patch_embed\.proj\.(weight|bias)", r"dpt.embeddings.projection.\1"),
        Rule(rf"{vit}\.blocks\.(\d+)\.norm1\.(weight|bias)", r"dpt.encoder.layer.\1.layernorm_before.\2"),
        Rule(rf"{vit}\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"dpt.encoder.layer.\1.attention.output.dense.\2"),
        Rule(rf"{vit}\.blocks\.(\d+)\.norm2\.(weight|bias)", r"dpt.encoder.layer.\1.layernorm_after.\2"),
        Rule(rf"{vit}\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"dpt.encoder.layer.\1.intermediate.dense.\2"),
        Rule(rf"{vit}\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"dpt.encoder.layer.\1.output.dense.\2"),
        Rule(rf"{vit}\.norm\.(weight|bias)", r"dpt.layernorm.\1"),
        Rule(
            r"pretrained\.act_postprocess(\d)\.0\.project\.0\.(weight|bias)",
            lambda m: f"neck.reassemble_stage.readout_projects.{int(m[1]) - 1}.0.{m[2]}",
        ),
        Rule(
            r"pretrained\.act_postprocess(\d)\.3\.(weight|bias)",
            lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.projection.{m[2]}",
        ),
        Rule(
            r"pretrained\.act_postprocess(\d)\.4\.(weight|bias)",
            lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.resize.{m[2]}",
        ),
        Rule(r"scratch\.layer(\d)_rn\.weight", lambda m: f"neck.convs.{int(m[1]) - 1}.weight"),
        Rule(r"scratch\.refinenet(\d)\.out_conv\.(weight|bias)", lambda m: f"{fusion_layer(m)}.projection.{m[2]}"),
        Rule(
            r"scratch\.refinenet(\d)\.resConfUnit([12])\.conv([12])\.(weight|bias)",
            lambda m: f"{fusion_layer(m)}.residual_layer{m[2]}.convolution{m[3]}.{m[4]}",
        ),
        Rule(r"scratch\.output_conv\.(\d)\.(weight|bias)", r"head.head.\1.\2"),
    ]


def convert_midas(
    checkpoint: Mapping[str, torch.Tensor], config: DPTConfig | None = None
) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Converts the MiDaS DPT-Hybrid of a CCEdit checkpoint to a transformers `DPTForDepthEstimation` state dict.

    Args:
        checkpoint (`Mapping[str, torch.Tensor]`):
            The full checkpoint state dict, e.g. from [`~ccedit.convert.checkpoint.open_state_dict`].
        config (`DPTConfig`, *optional*):
            Config of the target model. Defaults to [`dpt_hybrid_config`]. Names and shapes are checked against
            a `DPTForDepthEstimation` of the installed transformers, built on the meta device.

    Returns:
        `tuple[dict[str, torch.Tensor], set[str]]`: the `DPTForDepthEstimation` state dict (tensors are views of
        the checkpoint's, in its dtype, except timm's fused `qkv`, which becomes three separate copies) and the
        checkpoint keys consumed, including the unused ImageNet classifier `pretrained.model.head.*`, which has no
        target.

    Raises:
        [`~ccedit.errors.UserError`]: an unmapped source key, a missing target key or a shape mismatch.
    """
    config = dpt_hybrid_config() if config is None else config
    mapper = KeyMapper(checkpoint, MIDAS_PREFIX, name="MiDaS depth estimator")
    _map_midas(mapper, num_fusion_layers=len(config.neck_hidden_sizes))
    with torch.device("meta"):
        target = DPTForDepthEstimation(config)
    return mapper.finish(expected_shapes(target))


def _map_midas(mapper: KeyMapper, num_fusion_layers: int) -> None:
    """Maps every MiDaS key the mapper holds onto its transformers name (checking is left to `finish`)."""
    # 1. Split timm's fused attention input projection; its rows are stacked as [query; key; value].
    qkv = re.compile(r"pretrained\.model\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)")
    for key in mapper.remaining():
        match = qkv.fullmatch(key)
        # A length not divisible by 3 is left unmapped, so `finish` reports it.
        if match is None or mapper.source[key].shape[0] % 3 != 0:
            continue
        attention = f"dpt.encoder.layer.{match[1]}.attention.attention"
        for part, chunk in zip(("query", "key", "value"), mapper.take(key).chunk(3, dim=0)):
            # A copy (7 MB per layer), so the three do not alias one storage, which serialisers may treat as sharing.
            mapper.put(f"{attention}.{part}.{match[2]}", chunk.clone(), mapper.prefix + key)

    # 2. timm's classifier head: MiDaS only taps the blocks, so no DPT module corresponds to it.
    for key in mapper.remaining():
        if re.fullmatch(r"pretrained\.model\.head\.(weight|bias)", key):
            mapper.drop(key, "timm's ImageNet classifier, unused by MiDaS")

    # 3. Everything else is a rename.
    mapper.apply(_midas_rules(num_fusion_layers))
