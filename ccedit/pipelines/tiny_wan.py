"""Tiny random Wan2.1-VACE parts, built offline: the `wan-vace-tiny` model kind and the `wan_vace` baseline's `tiny`
option share them (the same weights every time)."""

from __future__ import annotations

import torch

TINY_SEED = 0
TINY_FLOW_SHIFT = 3.0  # the model kind's shift (the 480p release's)


def tiny_t5_tokenizer():
    """A T5-style tokenizer over single characters, built in code: T5's SentencePiece files are not installed and
    the hub may not answer, so `tokenizers` builds a Unigram model whose vocabulary is the printable characters
    (with T5's `<pad>`, `</s>`, `<unk>` and its word-start marker), ending every text with `</s>` as T5 does."""
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = ["<pad>", "</s>", "<unk>", "\u2581", *(c for c in string.printable if not c.isspace())]
    tok = Tokenizer(models.Unigram([(piece, 0.0) for piece in vocab], unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def tiny_wan_vace_parts() -> dict:
    """Tiny random Wan VACE parts, shaped as diffusers' own pipeline tests shape them (seeded); the text encoder is a
    tiny random UMT5 (the released model's encoder type) over the character tokenizer."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACETransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = tiny_t5_tokenizer()
    torch.manual_seed(TINY_SEED)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    torch.manual_seed(TINY_SEED + 1)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    ))
    torch.manual_seed(TINY_SEED + 2)
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=3, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32, vace_layers=[0, 2], vace_in_channels=96,
    )
    return {"vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "transformer": transformer.eval(), "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0)}


def cast_keeping_float32(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model` in `dtype`, except the modules diffusers keeps in float32 (`_keep_in_fp32_modules`: Wan's norms, time
    embedding and rotary tables), as `from_pretrained(torch_dtype=...)` loads a released model. (diffusers applies
    that rule only while loading weights; a model built in memory is cast here the same way.)"""
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    torch.nn.Module.to(model, dtype)  # diffusers' own `to` warns that it would cast those modules too
    for name, module in model.named_modules():
        if keep & set(name.split(".")):
            torch.nn.Module.to(module, torch.float32)
    return model
