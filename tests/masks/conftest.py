"""Fixtures for the mask tests: a small real clip fitted like an edit's, and tiny random SAM 2 / SAM 3 video models
built from their configs, saved with their processors and loaded back by path (offline, seconds on a CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.io import read_video
from ccedit.io.resize import fit_frames
from ccedit.pipelines.tiny import tiny_tokenizer
from tests.conftest import VIDEOS

# The tiny models' square input; SAM 2's Hiera needs a multiple of 32, SAM 3's ViT one of its 14-pixel patches.
SAM2_SIZE = 64
SAM3_SIZE, SAM3_PATCH = 56, 14
# Hidden sizes above the memory encoder's fixed 64 channels, which the object pointers are split into.
HIDDEN = 128
OBJECT_PRESENT = 20.0
MEMORY = 2


def _tracker_settings(size: int, patch: int, feature: int) -> dict:
    """The memory, prompt and mask-decoder settings SAM 2 video and SAM 3's tracker share, made small."""
    return dict(
        prompt_encoder_config=dict(hidden_size=HIDDEN, image_size=size, patch_size=patch),
        mask_decoder_config=dict(hidden_size=HIDDEN, mlp_dim=32, num_attention_heads=2, iou_head_hidden_dim=16),
        image_size=size, memory_attention_hidden_size=HIDDEN, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=32, memory_attention_rope_feat_sizes=[feature, feature],
        memory_encoder_hidden_size=HIDDEN, memory_encoder_output_channels=64, mask_downsampler_embed_dim=HIDDEN,
        memory_fuser_embed_dim=HIDDEN, memory_fuser_intermediate_dim=32, memory_fuser_num_layers=1,
    )


def save_tiny_sam2_video(folder) -> str:
    from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = SAM2_SIZE
    backbone = dict(model_type="sam2_hiera_det_model", hidden_size=8, num_attention_heads=1, image_size=[size, size],
                    embed_dim_per_stage=[8, 16, 32, 64], blocks_per_stage=[1, 1, 2, 1],
                    num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[2, 2, 2, 2],
                    global_attention_blocks=[3], window_positional_embedding_background_size=[2, 2])
    vision = dict(backbone_config=backbone, backbone_channel_list=[64, 32, 16, 8], fpn_hidden_size=HIDDEN,
                  backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2])
    # Memory of 2 frames, so that a test clip is longer than what tracking keeps and pruning shows.
    config = Sam2VideoConfig(vision_config=vision, num_maskmem=MEMORY, max_object_pointers_in_encoder=MEMORY,
                             **_tracker_settings(size, 16, size // 16))
    torch.manual_seed(0)
    model = Sam2VideoModel(config)
    with torch.no_grad():
        # Random weights score "no object" and blank every mask; a large bias says an object is always there, so
        # the masks are the random decoder's (non-empty) output and the whole path runs on real values.
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_PRESENT)
    model.save_pretrained(folder)
    square = {"height": size, "width": size}
    Sam2VideoProcessor(image_processor=Sam2ImageProcessor(size=square), video_processor=Sam2VideoVideoProcessor(
        size=square), target_size=size).save_pretrained(folder)
    return str(folder)


def save_tiny_sam3_video(folder) -> str:
    from transformers import Sam3VideoConfig, Sam3VideoModel, Sam3VideoProcessor
    from transformers.models.sam3.image_processing_sam3 import Sam3ImageProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size, patch, feature = SAM3_SIZE, SAM3_PATCH, SAM3_SIZE // SAM3_PATCH
    tokenizer = tiny_tokenizer()
    vit = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=37, num_hidden_layers=2,
               num_attention_heads=2, image_size=size, patch_size=patch, window_size=2, global_attn_indexes=[1],
               pretrain_image_size=size)
    vision = dict(backbone_config=vit, fpn_hidden_size=HIDDEN,
                  backbone_feature_sizes=[[4 * feature] * 2, [2 * feature] * 2, [feature] * 2])
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=64, projection_dim=32,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.eos_token_id)
    small = dict(hidden_size=HIDDEN, num_layers=1, num_attention_heads=2, intermediate_size=32)
    detector = dict(vision_config=vision, text_config=text, geometry_encoder_config=small, detr_encoder_config=small,
                    detr_decoder_config=dict(small, num_queries=8),
                    mask_decoder_config=dict(hidden_size=HIDDEN, num_attention_heads=2))
    # Detection thresholds at 0 so that random weights find instances and the whole path runs.
    config = Sam3VideoConfig(detector_config=detector, tracker_config=dict(
                             vision_config=vision, num_maskmem=MEMORY, max_object_pointers_in_encoder=MEMORY,
                             **_tracker_settings(size, patch, feature)), low_res_mask_size=16 * feature,
                             hotstart_delay=2, hotstart_unmatch_thresh=1, hotstart_dup_thresh=1,
                             score_threshold_detection=0.0, new_det_thresh=0.0)
    torch.manual_seed(0)
    Sam3VideoModel(config).save_pretrained(folder)
    square = {"height": size, "width": size}
    Sam3VideoProcessor(image_processor=Sam3ImageProcessor(size=square), video_processor=Sam2VideoVideoProcessor(
        size=square), tokenizer=tokenizer, target_size=size).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_sam2(tmp_path_factory) -> str:
    return save_tiny_sam2_video(tmp_path_factory.mktemp("sam2-video"))


@pytest.fixture(scope="session")
def tiny_sam3(tmp_path_factory) -> str:
    return save_tiny_sam3_video(tmp_path_factory.mktemp("sam3-video"))


@pytest.fixture(scope="session")
def source_clip() -> np.ndarray:
    """Ten real frames of the kitten clip at their source size (512x512)."""
    return read_video(VIDEOS / "kitten.mp4", num_frames=10).frames


@pytest.fixture(scope="session")
def fitted(source_clip):
    """The clip fitted like an edit's frames (48x64, centre crop), with its `FitRecord`."""
    return fit_frames(source_clip, (48, 64), "crop")
