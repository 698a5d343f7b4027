"""The training settings: a typed schema, the single source of defaults (`ccedit.config.load_config` merges YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("temporal", "cross_frame", "appearance")


@dataclass
class TrainModelConfig:
    # "tiny" (the built-in random components), "animatediff-tiny" (the tiny random open trident: AnimateDiff motion
    # modules + SparseCtrl) or an SD-1.5 folder / hub id with unet/, vae/, text_encoder/, tokenizer/ (the open trident
    # when `temporal` is a MotionAdapter)
    base: str = "tiny"
    controlnet: str | None = None  # structure ControlNet folder or hub id; null with a tiny base: the tiny one
    # trained temporal layers to start from (a folder or a model folder; a diffusers MotionAdapter trains the open
    # trident); null: zero init (animatediff-tiny: its own motion modules)
    temporal: str | None = None
    # trained appearance branch to start from (a SparseControlNetModel for the open trident); null: copied from the
    # UNet's encoder (the open trident: animatediff-tiny's own SparseCtrl, else a new one from the UNet's encoder)
    appearance: str | None = None
    # the keyframe model: appearance branch + cross-frame attention (CCEdit's TVI2V; animatediff-tiny: SparseCtrl)
    keyframe: bool = False
    trainable: list[str] = field(default_factory=lambda: ["temporal"])  # roles: temporal, cross_frame, appearance


@dataclass
class TrainDataConfig:
    videos: str | None = None  # a folder of videos; null with `synthetic`
    captions: str | None = None  # CSV with `path,caption` (or WebVid's `videoid,name`); null: <videos>/captions.csv
    synthetic: int = 0  # > 0: build this many moving-shape clips under <output>/data and train on them
    num_frames: int = 8  # frames per training window
    fps: float | None = 8.0  # target frame rate of the window; null: the source's
    height: int = 64
    width: int = 64
    annotator: str = "canny"  # structure maps of the window, as in `ccedit edit --structure`
    annotator_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None  # structure cache folder; null: no cache
    keyframe_index: str = "centre"  # the appearance keyframe: the window's centre frame, or `random` (one per step)
    num_workers: int = 0  # DataLoader worker processes


@dataclass
class TrainRecipeConfig:
    seed: int = 0
    max_steps: int = 1000
    batch_size: int = 1  # per process; the global batch is batch_size x processes x gradient_accumulation_steps
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    lr_scheduler: str = "constant_with_warmup"  # any diffusers.optimization scheduler name
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0  # 0: no clipping
    mixed_precision: str = "no"  # no, fp16 (CCEdit trained with fp16 AMP, ref §1 item 1) or bf16
    gradient_checkpointing: bool = False
    offset_noise: float = 0.0  # std of noise shared by a sample's pixels, drawn per sample, channel and frame
    text_dropout: float = 0.1  # probability of training on the empty prompt (for classifier-free guidance)
    structure_dropout: float = 0.0  # probability of a blank structure map
    use_ema: bool = False  # CCEdit's released models used no EMA (ref §1 item 5)
    ema_decay: float = 0.9999
    checkpoint_every: int = 500  # steps; a checkpoint is also written at the end
    keep_checkpoints: int | None = None  # keep only the newest N; null: all
    sample_every: int = 0  # steps; > 0: write <output>/samples/step-N.mp4, the model editing the first clip
    sample_prompt: str = "a watercolor painting"
    sample_steps: int = 4


@dataclass
class TrainConfig:
    output: str | None = None  # the run folder: losses.jsonl, config.yaml, checkpoints/, model/
    model: TrainModelConfig = field(default_factory=TrainModelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainRecipeConfig = field(default_factory=TrainRecipeConfig)
