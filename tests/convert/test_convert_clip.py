"""CLIP text encoder conversion: every full-size key on the meta device, and outputs at tiny size."""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel

from ccedit.convert.clip import CLIP_PREFIX, clip_text_config, convert_clip
from ccedit.errors import UserError
from tests.convert.keylists import meta_checkpoint, meta_shapes, reference_keys

TINY_CONFIG = CLIPTextConfig(
    vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=16, hidden_act="quick_gelu", projection_dim=32,
)


def released_layout(model: CLIPTextModel) -> dict[str, torch.Tensor]:
    """`model`'s weights under the names the release wrote: transformers-4.x `text_model.` level, position_ids kept."""
    state_dict = {}
    for key, tensor in model.state_dict().items():
        state_dict[CLIP_PREFIX + "text_model." + key.removeprefix("text_model.")] = tensor.clone()
    position_ids = torch.arange(model.config.max_position_embeddings).unsqueeze(0)
    state_dict[CLIP_PREFIX + "text_model.embeddings.position_ids"] = position_ids
    return state_dict


@pytest.mark.parametrize("name", ["keys_tv2v.json", "keys_tvi2v.json"])
def test_full_size_keys_map_onto_installed_clip_text_model(name):
    entries = reference_keys(name, "clip_text")
    checkpoint = meta_checkpoint(reference_keys(name))
    with torch.device("meta"):
        expected = meta_shapes(CLIPTextModel(clip_text_config()))

    state_dict, consumed = convert_clip(checkpoint)

    assert {key: tensor.shape for key, tensor in state_dict.items()} == expected
    assert consumed == {entry["key"] for entry in entries} and len(consumed) == 197


def test_tiny_text_encoder_gives_the_same_output():
    torch.manual_seed(0)
    original = CLIPTextModel(TINY_CONFIG).eval()
    state_dict, consumed = convert_clip(released_layout(original), TINY_CONFIG)
    converted = CLIPTextModel(TINY_CONFIG).eval()
    converted.load_state_dict(state_dict, strict=True)
    input_ids = torch.randint(0, TINY_CONFIG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))

    with torch.no_grad():
        expected = original(input_ids).last_hidden_state
        actual = converted(input_ids).last_hidden_state

    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert CLIP_PREFIX + "text_model.embeddings.position_ids" in consumed


def test_layout_without_text_model_level_is_accepted():
    # A checkpoint written by a newer transformers has neither the "text_model." level nor position_ids.
    torch.manual_seed(0)
    model = CLIPTextModel(TINY_CONFIG)
    checkpoint = {CLIP_PREFIX + key.removeprefix("text_model."): value for key, value in model.state_dict().items()}
    state_dict, consumed = convert_clip(checkpoint, TINY_CONFIG)
    assert meta_shapes(model) == {key: tensor.shape for key, tensor in state_dict.items()}
    assert consumed == set(checkpoint)


def test_wrong_width_is_reported():
    torch.manual_seed(0)
    checkpoint = released_layout(CLIPTextModel(TINY_CONFIG))
    with pytest.raises(UserError, match="shape mismatches"):
        convert_clip(checkpoint, clip_text_config())
