"""Settings: the edit schema, one YAML merge for any schema (files left to right, then flags, then `key=value`).

Only this module and `cli.py` touch OmegaConf; everything else sees the dataclasses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_checks import (
    check_annotator_names, check_component_names, check_numbers, check_window, reject_resolvers,
)
from .errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
T = TypeVar("T")
BUILTIN_MODELS = ("tiny", "animatediff-tiny")
# Models with shipped defaults of their own (configs/model/<name>.yaml); any other path is a converted CCEdit folder.
NAMED_MODELS = (*BUILTIN_MODELS, "animatediff")


@dataclass
class ModelConfig:
    path: str = "tiny"  # "tiny" (built in, random), a converted ccedit folder, or a hub id
    dtype: str = "auto"  # auto: float16 on CUDA, float32 on CPU; or float32 / float16 / bfloat16
    device: str = "auto"  # auto: cuda when available, else cpu
    native_frames: int = 17  # the window length the model was trained on (CCEdit: 17 key frames)
    short_side: int = 512  # working size's short side when --height/--width are not given
    size_multiple: int = 8  # frame sides are multiples of this: the VAE's factor (the UNet takes any latent size)
    cpu_offload: bool = False  # keep components on the CPU, move each to the GPU only while it runs
    vae_slicing: bool = True  # decode a few frames at a time
    compile: bool = False  # torch.compile the networks of every step (for GPUs; the first call compiles)
    channels_last: bool = False  # channels-last convolutions (for GPUs where tools/check_cuda.py finds them faster)
    tokenizer: str | None = None  # tokenizer path or hub id, when the model folder has none
    base: str | None = None  # a personalised SD-1.5 base under the temporal layers: folder, hub id or .safetensors file
    lora: list[Any] = field(default_factory=list)  # LoRAs: [{path: ..., scale: 1.0}, ...] on the UNet and text encoder
    fuse_lora: bool = False  # fold the LoRAs into the weights (faster sampling; cannot be undone in the session)
    parts: dict[str, Any] = field(default_factory=dict)  # path=animatediff: base, motion_adapter, controlnet, sparsectrl
    check_memory: bool = True  # refuse an edit estimated to need more memory than is available (--force: false)


@dataclass
class StructureConfig:
    annotators: list[str] = field(default_factory=lambda: ["depth"])  # `depth` = the model's own depth estimator
    scales: list[float] = field(default_factory=lambda: [1.0])  # one for every annotator, or one per annotator
    # One ControlNet per annotator: null = the model folder's own `controlnet`; else a path or hub id.
    controlnets: list[str | None] = field(default_factory=list)
    cache_dir: str | None = "~/.cache/ccedit/structure"  # null: no cache
    cache_max_gb: float | None = 10.0  # least recently used entries go beyond this size; null: unbounded
    options: dict[str, Any] = field(default_factory=dict)  # per annotator name: constructor options


@dataclass
class SamplingConfig:
    scheduler: str = "dpmpp_2s_ancestral"  # the README sampler of CCEdit
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    negative_prompt: str = "ugly, low quality"  # CCEdit's default uncond text
    add_prompt: str = "masterpiece, high quality"  # prepended as "<add_prompt>, <prompt>" when non-empty
    appearance_scale: float = 1.0
    prior: str = "auto"  # auto: "keyframe" with a keyframe (CCEdit's anchor prior), else "none"; or none/keyframe/video
    prior_coefficient: float = 0.03  # weight of the anchor prior (CCEdit's README setting)
    strength: float = 1.0  # SDEdit: < 1 starts from the noised source video
    pin_keyframes: bool = True  # keep each keyframe's latent at its frame (false: the model repaints it, as CCEdit did)
    auto_keyframe_strength: float = 0.75  # --keyframe auto: SDEdit strength of the keyframe's own image-to-image edit
    seed: int = 0


@dataclass
class VideoConfig:
    num_frames: int | None = None  # null: every frame from --start on (at --fps)
    fps: float | None = None  # null: the source's rate; else every round(source_fps / fps)-th frame
    start: float = 0.0  # seconds
    height: int | None = None
    width: int | None = None
    resize_mode: str = "crop"  # crop (fill the frame) or pad (letterbox; maps see only the picture, outputs drop the bars)
    folder_fps: float = 8.0  # frame rate of a folder of images


@dataclass
class WindowsConfig:
    length: int | None = None  # frames per network call; null: the model's native length (model.native_frames)
    overlap: int | None = None  # frames neighbouring windows share; null: a quarter of the window
    hierarchical: str = "auto"  # auto: with keyframes on a clip longer than a window; or true / false
    noise: str = "independent"  # initial noise: independent per frame, or "repeat" each window's (FreeNoise)


@dataclass
class OutputConfig:
    side_by_side: bool = False  # also write <out>.side_by_side.mp4: source | each map | each keyframe | result
    gif: bool = False  # also write <out>.gif
    frames: bool = False  # also write <out>_frames/ with one PNG per frame
    conditions: bool = False  # also write <out>.conditions/: what each network received, window by window


@dataclass
class EditConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return asdict(self)


AUTO_KEYFRAME = "auto"
MATCH_KEYFRAME = "match"  # IMAGE@match: the frame the image shows is found by its structure


@dataclass(frozen=True)
class KeyframeSpec:
    """One keyframe of an edit job: an image path or `auto`, and the frame it shows (None: the default frame, or
    with `match` the frame whose structure the image matches best, found once the frames are decoded)."""

    source: str
    index: int | None = None
    match: bool = False

    @property
    def is_auto(self) -> bool:
        return self.source == AUTO_KEYFRAME

    @classmethod
    def parse(cls, text: str, index: int | None = None) -> "KeyframeSpec":
        """`IMAGE`, `IMAGE@INDEX`, `IMAGE@match`, `auto` or `auto@INDEX`; `index` (from --keyframe-index) when none
        is written."""
        path, sep, suffix = text.rpartition("@")
        if sep and suffix == MATCH_KEYFRAME:
            if path == AUTO_KEYFRAME:
                raise UserError(f"--keyframe {text}: `auto` edits a frame you choose, it has no image to match: "
                                "write auto@INDEX")
            if index is not None:
                raise UserError(f"--keyframe {text} already says how to find its frame: drop --keyframe-index")
            return cls(path, None, match=True)
        if sep and suffix.lstrip("-").isdigit():
            if index is not None:
                raise UserError(f"--keyframe {text} already names its frame: drop --keyframe-index")
            return cls(path, int(suffix))
        return cls(text, index)


@dataclass
class EditJob:
    """What one edit does, apart from how (`EditConfig`): the input clip, the target prompt, its keyframes, and
    where the result goes (None: kept in memory, as an evaluation does)."""

    input: str
    prompt: str
    keyframes: list[KeyframeSpec] = field(default_factory=list)
    output: str | None = None


def model_defaults_file(model: str) -> Path:
    """The shipped defaults for a model: `configs/model/<name>.yaml` for built-ins, else the CCEdit ones."""
    name = model if model in NAMED_MODELS else "ccedit"
    return CONFIG_DIR / "model" / f"{name}.yaml"


def load_config(
    schema: type[T],
    defaults_files: Sequence[str | Path] = (),
    user_files: Sequence[str | Path] = (),
    overrides: dict[str, Any] | None = None,
    dotlist: Sequence[str] = (),
    *,
    hint: str = "",
) -> T:
    """Merge, left to right: the dataclass `schema` (the single source of defaults), the shipped `defaults_files`,
    the user's `user_files`, `overrides` (the CLI flags, as a nested dict) and `dotlist` (`key=value` strings).

    Unknown keys and wrong types fail here with one line (`UserError`), naming the key; `hint` says where the
    valid settings are listed.
    """
    where_listed = f" (see {hint})" if hint else ""
    for f in user_files:
        if not Path(f).is_file():
            raise UserError(f"config file not found: {f}")
    with _one_line_errors(user_files, dotlist, where_listed):
        defaults = [OmegaConf.load(f) for f in defaults_files]
        user = [load_user_file(f, where_listed) for f in user_files]
        flags = OmegaConf.create(overrides or {})
        cli = OmegaConf.from_dotlist(list(dotlist))
        for layer, source in (*zip(user, map(str, user_files)), (flags, "a flag"), (cli, "a KEY=VALUE setting")):
            reject_resolvers(OmegaConf.to_container(layer, resolve=False), source)
        try:
            merged = OmegaConf.merge(OmegaConf.structured(schema), *defaults, *user, flags, cli)
        except TypeError:  # OmegaConf's word for a mapping merged into a list (or the reverse): no key named
            raise UserError(_container_mismatch_line(dotlist)) from None
        return OmegaConf.to_object(merged)


def load_user_file(path: str | Path, where_listed: str = ""):
    """A user's settings file as OmegaConf, refused in one line unless it is a YAML mapping of settings.

    The file's text is never repeated in the message: a file given by mistake (a key file, notes) stays private.
    OmegaConf alone would read a line of plain text as a setting named after the whole line.
    """
    with open(path, encoding="utf-8") as f:  # a stream, so YAML's errors name the file
        data = yaml.safe_load(f)
    if data is not None and not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "plain text" if isinstance(data, str) else "a single value"
        raise UserError(f"config file {path} is not YAML settings: it holds {kind}, not KEY: VALUE lines"
                        f"{where_listed}")
    return OmegaConf.load(path)


def _container_mismatch_line(dotlist: Sequence[str]) -> str:
    """The one line for a setting that gives a list element or a mapping where the other is expected."""
    element = next((d for d in dotlist if any(part.isdigit() for part in d.partition("=")[0].split("."))), None)
    if element is not None:
        key = element.partition("=")[0]
        parts = key.split(".")
        whole = ".".join(parts[: next(i for i, part in enumerate(parts) if part.isdigit())])
        return f"cannot set {key}: the list {whole} is set whole, not by element: write {whole}=[...] with every element"
    return ("a setting gives a mapping where a list is expected, or a list where a mapping is: check the lists in "
            "the --config files and KEY=VALUE settings against configs/edit/default.yaml")


@contextlib.contextmanager
def _one_line_errors(user_files: Sequence[str | Path], dotlist: Sequence[str], where_listed: str):
    """Turn OmegaConf's and YAML's errors about the user's settings into one-line `UserError`s."""
    try:
        yield
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        where = f" `{key}`" if key else ""
        raise UserError(f"invalid setting{where}: {str(e).splitlines()[0]}{where_listed}") from None
    except yaml.YAMLError as e:
        raise UserError(yaml_error_line(e, list(dotlist))) from None
    except UnicodeDecodeError:
        raise UserError(f"a config file is not UTF-8 text: check the --config files {', '.join(map(str, user_files))}") from None


def load_edit_config(
    files: list[str | Path] = (), overrides: dict[str, Any] | None = None, dotlist: list[str] = (), model: str | None = None
) -> EditConfig:
    """`load_config` for edits: the defaults are `configs/edit/default.yaml`, then the chosen model's defaults."""
    # The model's defaults come before the user's files, but which model it is may be set anywhere.
    chosen = model
    hint = "configs/edit/default.yaml"
    with _one_line_errors(files, dotlist, f" (see {hint})"):
        for layer in (*(load_user_file(f, f" (see {hint})") for f in files if Path(f).is_file()), OmegaConf.create(overrides or {}),
                      OmegaConf.from_dotlist(list(dotlist))):
            chosen = OmegaConf.select(layer, "model.path", default=chosen)
    defaults = [CONFIG_DIR / "edit" / "default.yaml"]
    model_file = model_defaults_file(chosen or "tiny")
    if model_file.is_file():
        defaults.append(model_file)
    config = load_config(EditConfig, defaults, files, overrides, dotlist, hint=hint)
    validate(config)
    return config


def yaml_error_line(error: yaml.YAMLError, dotlist: list[str] = ()) -> str:
    """One line for a YAML syntax error: where (the file and line, or the `key=value` setting) and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    if mark is not None and not mark.name.startswith("<"):
        where = f"config file {mark.name}, line {mark.line + 1}, column {mark.column + 1}"
    else:
        # OmegaConf parses every value of the dotlist as YAML without naming it: find the one that fails.
        bad = [d for d in dotlist if not _is_yaml(d.partition("=")[2])]
        where = f"the setting {bad[0]!r}" if bad else "a KEY=VALUE setting"
    return f"invalid YAML in {where}: {problem}; check brackets, quotes and indentation"


def _is_yaml(text: str) -> bool:
    try:
        yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return True


def validate(config: EditConfig) -> None:
    check_numbers(config)
    check_annotator_names(config)
    check_component_names(config)
    s, v = config.sampling, config.video
    if s.prior not in ("auto", "none", "keyframe", "video"):
        raise UserError(f"sampling.prior must be auto, none, keyframe or video, got {s.prior!r}")
    if v.resize_mode not in ("crop", "pad"):
        raise UserError(f"video.resize_mode must be crop or pad, got {v.resize_mode!r}")
    if v.num_frames is not None and v.num_frames < 1:
        raise UserError(f"--frames must be at least 1, got {v.num_frames}")
    if s.num_inference_steps < 1:
        raise UserError(f"--steps must be at least 1, got {s.num_inference_steps}")
    if config.structure.cache_max_gb is not None and not config.structure.cache_max_gb >= 0:
        raise UserError(f"structure.cache_max_gb must be 0 or more (null: unbounded), got {config.structure.cache_max_gb}")
    w = config.windows
    if w.hierarchical not in ("auto", "true", "false"):
        raise UserError(f"windows.hierarchical must be auto, true or false, got {w.hierarchical!r}")
    if w.noise not in ("independent", "repeat"):
        raise UserError(f"windows.noise must be independent or repeat, got {w.noise!r}")
    check_window(window_length(config), w.overlap)
    if not 0 < s.auto_keyframe_strength <= 1:
        raise UserError(f"sampling.auto_keyframe_strength must be in (0, 1], got {s.auto_keyframe_strength}")
    if not config.structure.annotators:
        raise UserError("structure.annotators is empty: name at least one, e.g. --structure depth")
    if len(config.structure.scales) not in (1, len(config.structure.annotators)):
        raise UserError(
            f"structure.scales has {len(config.structure.scales)} entries for {len(config.structure.annotators)} annotators"
        )


def window_length(config: EditConfig) -> int:
    """Frames per network call: `windows.length`, else the model's native length."""
    return config.windows.length if config.windows.length is not None else config.model.native_frames


def structure_controlnets(config: EditConfig) -> list[str | None]:
    """One ControlNet per structure annotator: `structure.controlnets`, padded with None (the model's own)."""
    names = config.structure.annotators
    return (list(config.structure.controlnets) + [None] * len(names))[: len(names)]


def structure_scales(config: EditConfig) -> list[float]:
    """One ControlNet scale per structure annotator: `structure.scales`, a single entry applying to every one."""
    scales, names = config.structure.scales, config.structure.annotators
    return list(scales) * len(names) if len(scales) == 1 else list(scales)


def hierarchical_setting(config: EditConfig) -> bool | None:
    """`windows.hierarchical` for the pipeline: None (auto), True or False."""
    return {"auto": None, "true": True, "false": False}[config.windows.hierarchical]


def to_yaml(config: EditConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
