"""A tiny, randomly initialised CCEdit model: checks an install and runs the real code path in seconds, offline.

Its edits are noise-like (nothing was trained), but every branch computes: temporal layers, cross-frame attention,
ControlNet and appearance encoder all start from random values rather than CCEdit's zero initialisation.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..models.geometry import Geometry, build_network_modules
from ..models.layers import randomize_zero_parameters
from ..schedulers import build_scheduler

TINY_GEOMETRY = Geometry(
    model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[1, 2], num_heads=2, context_dim=32
)
TINY_SEED = 0


def _byte_alphabet() -> list[str]:
    """One printable character per byte value, so a vocabulary over characters covers any UTF-8 text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer over single characters (no merges): 514 tokens, built from files written on the fly."""
    chars = _byte_alphabet()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)


def variance_preserving_hint_encoder(controlnet: ControlNetModel, generator: torch.Generator) -> ControlNetModel:
    """Give the ControlNet's hint encoder weights that keep its activations' scale (He initialisation).

    Under diffusers' default initialisation the eight convolutions of the hint encoder shrink the maps by orders of
    magnitude (reversing the maps' frame order moved the tiny model's latents by about 1e-5 relative), so in an
    untrained model the structure branch would barely depend on the maps and no test could see maps paired with
    the wrong frames. Trained ControlNets amplify their maps; this makes the random stand-in do the same.
    """
    with torch.no_grad():
        for conv in controlnet.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                conv.bias.zero_()
    return controlnet


# Random stand-ins at larger sizes, for benchmarks and memory checks: `medium` is SD-1.5's shape at 128 channels
# (heads, levels, context width and VAE depth kept; VAE and text encoder narrowed), `sd15` is the released size.
GEOMETRIES = {
    "tiny": TINY_GEOMETRY,
    "medium": Geometry(model_channels=128, channel_mult=[1, 2, 4, 4], num_res_blocks=2,
                       attention_resolutions=[4, 2, 1], num_heads=8, context_dim=768),
    "sd15": Geometry(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=2,
                     attention_resolutions=[4, 2, 1], num_heads=8, context_dim=768),
}
VAE_CONFIGS = {  # four levels: 8x downsampling like SD's VAE
    "tiny": dict(block_out_channels=[8, 16, 16, 16], layers_per_block=1, norm_num_groups=8),
    "medium": dict(block_out_channels=[32, 64, 128, 128], layers_per_block=2, norm_num_groups=32),
    "sd15": dict(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32),
}
TEXT_CONFIGS = {  # CLIP text models over the tiny tokenizer; sd15 is CLIP ViT-L/14's text tower
    "tiny": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
    "medium": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=4, num_attention_heads=12),
    "sd15": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
}


def build_vae(name: str) -> AutoencoderKL:
    """A randomly initialised (or, under `torch.device("meta")`, empty) VAE of the named geometry."""
    cfg = VAE_CONFIGS[name]
    levels = len(cfg["block_out_channels"])
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * levels,
        up_block_types=["UpDecoderBlock2D"] * levels, latent_channels=4, sample_size=128, **cfg,
    )


def build_text_encoder(name: str, vocab_size: int) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                       pad_token_id=513, **TEXT_CONFIGS[name])
    )


def tiny_components(keyframe: bool = True, geometry: str = "tiny") -> dict:
    """Components of a random CCEdit pipeline of a named geometry (`GEOMETRIES`), the same for every call (seeded)."""
    torch.manual_seed(TINY_SEED)
    networks = build_network_modules(GEOMETRIES[geometry], keyframe)
    generator = torch.Generator().manual_seed(TINY_SEED)
    for module in networks.values():
        randomize_zero_parameters(module, generator)
    variance_preserving_hint_encoder(networks["controlnet"], generator)
    torch.manual_seed(TINY_SEED + 1)
    vae = build_vae(geometry)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(TINY_SEED + 2)
    text_encoder = build_text_encoder(geometry, len(tokenizer))
    return dict(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=networks["unet"].eval(),
        temporal=networks["temporal"].eval(),
        controlnet=networks["controlnet"].eval(),
        appearance=networks["appearance"].eval() if keyframe else None,
        scheduler=build_scheduler("dpmpp_2s_ancestral"),
    )


def tiny_controlnet(seed: int) -> ControlNetModel:
    """Another tiny random ControlNet, for runs with several structure annotators."""
    torch.manual_seed(TINY_SEED + 10 + seed)
    net = ControlNetModel(**TINY_GEOMETRY.controlnet_config())
    generator = torch.Generator().manual_seed(TINY_SEED + 10 + seed)
    randomize_zero_parameters(net, generator)
    return variance_preserving_hint_encoder(net, generator).eval()


def tiny_animatediff_components(appearance: bool = True) -> dict:
    """Components of a tiny open trident: the tiny base, VAE, text encoder and ControlNet with a random AnimateDiff
    motion adapter as the main branch's temporal layers (and a random SparseCtrl-RGB appearance branch), sampling
    the diffusers way."""
    from diffusers import MotionAdapter

    components = tiny_components(keyframe=False)
    torch.manual_seed(TINY_SEED + 20)
    unet = components["unet"]
    adapter = MotionAdapter(
        block_out_channels=tuple(unet.config.block_out_channels), motion_layers_per_block=unet.config.layers_per_block,
        motion_norm_num_groups=unet.config.norm_num_groups, motion_num_attention_heads=2, motion_max_seq_length=32,
    )
    randomize_zero_parameters(adapter, torch.Generator().manual_seed(TINY_SEED + 20))  # its output layers start at 0
    components["temporal"] = adapter.eval()
    components["appearance"] = tiny_sparse_control(unet).eval() if appearance else None
    components["scheduler"] = build_scheduler("ddim")
    components["sampling_convention"] = "diffusers"
    return components


def tiny_sparse_control(unet):
    """A tiny random SparseCtrl-RGB network (keyframe latents in, residuals for every frame out) for `unet`."""
    from diffusers import SparseControlNetModel

    torch.manual_seed(TINY_SEED + 30)
    cfg = unet.config
    net = SparseControlNetModel(
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=tuple("CrossAttnDownBlockMotion" if t.startswith("CrossAttn") else "DownBlockMotion"
                               for t in cfg.down_block_types),
        cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups, motion_num_attention_heads=2, motion_max_seq_length=32,
        conditioning_channels=4, use_simplified_condition_embedding=True, concat_conditioning_mask=True,
    )
    return randomize_zero_parameters(net, torch.Generator().manual_seed(TINY_SEED + 30))
