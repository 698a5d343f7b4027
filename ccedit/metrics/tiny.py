"""Tiny, randomly initialised metric models: CLIP (also usable as PickScore) and RAFT, built offline in seconds.

Their scores mean nothing about quality; they let tests and the offline evaluation example run every metric's real
code path (processor, model, flow estimation, warping) without downloads. `model: tiny` in a metric's options
builds them in memory; `save_tiny_clip` / `save_tiny_raft` write folders that load like released models.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from ccedit.metrics.raft_folder import save_raft
from ccedit.pipelines.tiny import tiny_tokenizer

TINY_SEED = 0
# The tiny vision tower sees 32x32 crops; the processor scales the shorter side to this size like CLIP's 224.
TINY_IMAGE_SIZE = 32
# Text positions of the tiny CLIP. Its tokenizer spells words out character by character, so a benchmark prompt
# that real CLIP reads in 30 tokens takes 150 here: the limit grows so the prompts of BalanceCC-sized benchmarks fit.
TINY_TEXT_LENGTH = 256


def tiny_clip() -> tuple[CLIPModel, CLIPProcessor]:
    """A seeded random CLIP (two-layer towers, 16-d projections) and its processor (character tokenizer)."""
    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = TINY_TEXT_LENGTH
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_TEXT_LENGTH,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.eos_token_id,
        ),
        vision_config=dict(
            image_size=TINY_IMAGE_SIZE,
            patch_size=8,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
        ),
        projection_dim=16,
    )
    torch.manual_seed(TINY_SEED)
    model = CLIPModel(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE}, crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_clip(folder: str | os.PathLike) -> Path:
    """Write the tiny CLIP and its processor to `folder`, loadable by `CLIPModel`/`AutoModel.from_pretrained`."""
    model, processor = tiny_clip()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)


# Scale of the flow head's output layer. Untouched random weights predict tens of pixels of noise, which fails the
# forward-backward check everywhere, so every pixel would be masked and the warp error would be 0 for any clip. Scaled
# down, flows stay below about a third of a pixel and smooth, like a trained RAFT's on a still scene, and the whole
# warp-error path (masking included) computes on real values.
TINY_RAFT_FLOW_SCALE = 1e-2


def tiny_raft() -> torch.nn.Module:
    """torchvision's `raft_small` with seeded random weights (about a million parameters) and sub-pixel flows."""
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(TINY_SEED)
    model = raft_small(weights=None).eval()
    head = model.update_block.flow_head.conv2
    with torch.no_grad():
        head.weight.mul_(TINY_RAFT_FLOW_SCALE)
        head.bias.mul_(TINY_RAFT_FLOW_SCALE)
    return model


def save_tiny_raft(folder: str | os.PathLike) -> Path:
    """Write the tiny RAFT to `folder` (`config.json` + `model.safetensors`), loadable as a metric's flow model."""
    return save_raft(tiny_raft(), folder, "raft_small")
