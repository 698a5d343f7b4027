"""Settings: the edit schema, one YAML merge for any schema (files left to right, then flags, then `key=value`).

Only this module and `cli.py` touch OmegaConf; everything else sees the dataclasses.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .config_checks import (
    SCHEDULER_NAMES, Hierarchical, ModelDtype, Prior, ResizeMode, WindowNoise, check_annotator_names,
    check_numbers, check_scheduler_name, check_window, reject_resolvers,
)
from .errors import UserError
from .kinds.registry import DEFAULT_MODEL, kind_for
from .masks.options import MaskOptions

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
T = TypeVar("T")
# The schema's defaults of the settings a model kind decides are the default model's (its kind's layer replaces
# them for any other model: `ModelKind.settings`).
_DEFAULT_KIND = kind_for(DEFAULT_MODEL).conventions


def setting(default: Any, help: str):
    """A field of the edit schema: its one default, and the help `ccedit edit --help` prints beside it."""
    if isinstance(default, (list, dict)):  # a fresh copy for each config, as dataclasses require
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    path: str = setting(DEFAULT_MODEL, "a named model (`ccedit models` lists them: the built-in random ones and "
                        "animatediff, the open trident), a converted CCEdit folder, or a hub id")
    dtype: ModelDtype = setting(ModelDtype.auto, "auto: float16 on CUDA, float32 elsewhere; or float32, float16, "
                                "bfloat16")
    device: str = setting("auto", "auto: cuda when available, else cpu; or a torch device such as cuda:1")
    native_frames: int = setting(_DEFAULT_KIND.native_frames, "the window length the model was trained on (the "
                                 "model kind's own unless set: CCEdit 17, AnimateDiff 16)")
    short_side: int = setting(512, "the working size's short side when video.height and video.width are not given")
    size_multiple: int = setting(_DEFAULT_KIND.size_multiple, "frame sides are multiples of this: the VAE's factor (the UNet takes any "
                                 "latent size)")
    cpu_offload: bool = setting(False, "keep components on the CPU, move each to the GPU only while it runs")
    vae_slicing: bool = setting(True, "decode a few frames at a time")
    compile: bool = setting(False, "torch.compile the networks of every step (for GPUs; the first call compiles)")
    channels_last: bool = setting(False, "channels-last convolutions (for GPUs where tools/check_cuda.py finds "
                                  "them faster)")
    tokenizer: str | None = setting(None, "tokenizer path or hub id, when the model folder has none")
    base: str | None = setting(None, "a personalised SD-1.5 base under the temporal layers: folder, hub id or "
                               ".safetensors file")
    lora: list[Any] = setting([], "LoRAs on the UNet and text encoder, e.g. [{path: style.safetensors, "
                              "scale: 0.8}]")
    fuse_lora: bool = setting(False, "fold the LoRAs into the weights (faster sampling; cannot be undone in "
                              "the session)")
    parts: dict[str, Any] = setting({}, "model.path=animatediff: base, motion_adapter, controlnet, sparsectrl")
    check_memory: bool = setting(True, "refuse an edit estimated to need more memory than is available")
    cpu_tuning: bool = setting(False, "on the CPU, run dense layers through oneDNN (about 2x faster where the CPU's "
                               "BLAS is slow, e.g. AMD; results agree to float rounding, not bit for bit)")


@dataclass
class StructureConfig:
    annotators: list[str] = setting(["depth"], "structure annotators; depth is the model's own depth estimator")
    scales: list[float] = setting([1.0], "strength of the structure maps: one for every annotator, or one per "
                                  "annotator")
    controlnets: list[str | None] = setting([], "one ControlNet per annotator: null is the model folder's own "
                                            "controlnet; else a path or hub id")
    cache_dir: str | None = setting("~/.cache/ccedit/structure", "where structure maps are cached; null: no cache")
    cache_max_gb: float | None = setting(10.0, "least recently used maps are deleted beyond this size; "
                                         "null: unbounded")
    options: dict[str, Any] = setting({}, "per annotator name: constructor options, e.g. "
                                      "{canny: {low_threshold: 50}}")


@dataclass
class SamplingConfig:
    scheduler: str = setting(_DEFAULT_KIND.scheduler, f"the sampler: {', '.join(SCHEDULER_NAMES)} (the model "
                             "kind's own unless set)")
    shift: float | None = setting(None, "flow-matching models (wan-vace): the sampler's shift; null: the model's "
                                  "own")
    num_inference_steps: int = setting(30, "denoising steps")
    guidance_scale: float = setting(7.5, "classifier-free guidance scale")
    negative_prompt: str = setting("ugly, low quality", "the unconditional text (CCEdit's)")
    add_prompt: str = setting("masterpiece, high quality", "prepended as \"<add_prompt>, <prompt>\" when not empty")
    appearance_scale: float = setting(1.0, "strength of the keyframes' appearance")
    references: list[str] = setting([], "reference images the edit should show (models that take them, e.g. "
                                    "Wan-VACE): each fitted to the working size like the frames")
    prior: Prior = setting(Prior.auto, "auto: keyframe (CCEdit's anchor prior) with a keyframe, else none; or none, "
                           "keyframe, video")
    prior_coefficient: float = setting(0.03, "weight of the anchor prior (CCEdit's README setting)")
    strength: float = setting(1.0, "SDEdit: below 1 starts from the noised source video")
    pin_keyframes: bool = setting(True, "keep each keyframe's latent at its frame (false: the model repaints it, "
                                  "as CCEdit did)")
    auto_keyframe_strength: float = setting(0.75, "SDEdit strength of an auto keyframe's own image-to-image edit")
    seed: int = setting(0, "random seed (same seed, same output)")


@dataclass
class VideoConfig:
    num_frames: int | None = setting(None, "frames to edit; null: every frame from video.start on (at video.fps)")
    fps: float | None = setting(None, "null: the source's rate; else every round(source_fps / fps)-th frame")
    start: float = setting(0.0, "seconds into the clip")
    height: int | None = setting(None, "working height; null: from the aspect ratio")
    width: int | None = setting(None, "working width; null: from the aspect ratio")
    resize_mode: ResizeMode = setting(ResizeMode.crop, "crop (fill the frame) or pad (letterbox; maps see only "
                                      "the picture, outputs drop the bars)")
    folder_fps: float = setting(8.0, "frame rate of a folder of images")


@dataclass
class WindowsConfig:
    length: int | None = setting(None, "frames per network call; null: the model's native length "
                                 "(model.native_frames)")
    overlap: int | None = setting(None, "frames neighbouring windows share; null: a quarter of the window")
    hierarchical: Hierarchical = setting(Hierarchical.auto, "auto: a sparse pass over the keyframes first when "
                                         "a clip with keyframes is longer than a window; or true, false")
    noise: WindowNoise = setting(WindowNoise.independent, "initial noise: independent per frame, or repeat each "
                                 "window's (FreeNoise)")


@dataclass
class OutputConfig:
    side_by_side: bool = setting(False, "also write <out>.side_by_side.mp4: source | each map | each keyframe | "
                                 "result")
    gif: bool = setting(False, "also write <out>.gif")
    frames: bool = setting(False, "also write <out>_frames/ with one PNG per frame")
    conditions: bool = setting(False, "also write <out>.conditions/: what each network received, window by window")


@dataclass
class MaskConfig:
    spec: str | None = setting(None, "region edit: where the edit may act (PATH, IMAGE@K, text:WORDS, point:K,x,y or "
                               "box:K,x0,y0,x1,y1; coordinates in source pixels); null: the whole frame")
    dilate: int = setting(MaskOptions.dilate, "grow the region by this many pixels (a disc), after invert")
    feather: int = setting(MaskOptions.feather, "width in pixels of the soft band outside the region where the edit fades into the "
                           "source")
    invert: bool = setting(MaskOptions.invert, "edit everything except the region")
    tracker: str = setting(MaskOptions.tracker, "SAM 2 video model (folder or hub id) tracking a click, box or mask")
    text_tracker: str = setting(MaskOptions.text_tracker, "SAM 3 video model (folder or hub id) finding a text concept")
    chunk_frames: int = setting(MaskOptions.chunk_frames, "frames a tracker holds prepared at once (bounds its memory, same masks)")
    remove: bool = setting(False, "remove what the region shows: fill it from its surroundings, then edit it with "
                           "mask.background_prompt instead of the prompt")
    background_prompt: str = setting("empty background, seamless continuation of the surrounding scene",
                                     "what mask.remove paints in the region")


@dataclass
class EditConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    structure: StructureConfig = field(default_factory=StructureConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    windows: WindowsConfig = field(default_factory=WindowsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def schema_settings(schema: type = EditConfig, prefix: str = ""):
    """(dotted key, default, help) of every setting of a dataclass schema, in the order the schema declares them."""
    types = get_type_hints(schema)
    for f in fields(schema):
        if is_dataclass(types[f.name]):
            yield from schema_settings(types[f.name], f"{prefix}{f.name}.")
        else:
            default = f.default_factory() if f.default is MISSING else f.default
            yield f"{prefix}{f.name}", default, f.metadata.get("help", "")


def _choice_types(schema: type, prefix: str = "") -> dict[str, type[Enum]]:
    """Dotted key -> enum type of every setting of `schema` that takes one of a fixed set of names."""
    types = get_type_hints(schema)
    found: dict[str, type[Enum]] = {}
    for f in fields(schema):
        kind = types[f.name]
        if is_dataclass(kind):
            found.update(_choice_types(kind, f"{prefix}{f.name}."))
        elif isinstance(kind, type) and issubclass(kind, Enum):
            found[f"{prefix}{f.name}"] = kind
    return found


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
    mask: str | None = None  # a region for this job alone (a mask spec, as `mask.spec`), e.g. a benchmark item's


def model_defaults_file(model: str) -> Path | None:
    """The settings the model's kind changes from the schema's defaults (`configs/model/<kind>.yaml`); None for a
    kind whose settings are the schema's (a converted CCEdit folder or hub id)."""
    path = CONFIG_DIR / "model" / f"{kind_for(model).name}.yaml"
    return path if path.is_file() else None


def load_config(
    schema: type[T],
    defaults_files: Sequence[str | Path | dict] = (),
    user_files: Sequence[str | Path] = (),
    overrides: dict[str, Any] | None = None,
    dotlist: Sequence[str] = (),
    *,
    hint: str = "",
) -> T:
    """Merge, left to right: the dataclass `schema` (the single source of defaults), the shipped `defaults_files`
    (what a model changes: files, or nested dicts such as a model kind's conventions), the user's `user_files`, `overrides` (the CLI flags, as a nested dict) and `dotlist`
    (`key=value` strings).

    Unknown keys, wrong types and names outside a setting's choices fail here with one line (`UserError`), naming
    the key; `hint` says where the valid settings are listed.
    """
    where_listed = f" (see {hint})" if hint else ""
    for f in user_files:
        if not Path(f).is_file():
            raise UserError(f"config file not found: {f}")
    choices = _choice_types(schema)
    with _one_line_errors(user_files, dotlist, where_listed, choices):
        defaults = [OmegaConf.create(f) if isinstance(f, dict) else OmegaConf.load(f) for f in defaults_files]
        user = [load_user_file(f, where_listed) for f in user_files]
        flags = OmegaConf.create(overrides or {})
        cli = OmegaConf.from_dotlist(list(dotlist))
        for layer, source in (*zip(user, map(str, user_files)), (flags, "a flag"), (cli, "a KEY=VALUE setting")):
            reject_resolvers(OmegaConf.to_container(layer, resolve=False), source)
        layers = [_booleans_as_names(layer, choices) for layer in (*defaults, *user, flags, cli)]
        try:
            merged = OmegaConf.merge(OmegaConf.structured(schema), *layers)
        except TypeError:  # OmegaConf's word for a mapping merged into a list (or the reverse): no key named
            raise UserError(_container_mismatch_line(dotlist, hint)) from None
        return OmegaConf.to_object(merged)


def _booleans_as_names(layer, choices: dict[str, type[Enum]]):
    """`layer` with YAML's true/false read as the names `true`/`false` where a setting takes names (YAML reads
    `windows.hierarchical: true` as a boolean, which no name equals)."""
    for key in choices:
        value = OmegaConf.select(layer, key, default=None)
        if isinstance(value, bool):
            OmegaConf.update(layer, key, str(value).lower())
    return layer


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


def _container_mismatch_line(dotlist: Sequence[str], hint: str) -> str:
    """The one line for a setting that gives a list element or a mapping where the other is expected."""
    element = next((d for d in dotlist if any(part.isdigit() for part in d.partition("=")[0].split("."))), None)
    if element is not None:
        key = element.partition("=")[0]
        parts = key.split(".")
        whole = ".".join(parts[: next(i for i, part in enumerate(parts) if part.isdigit())])
        return f"cannot set {key}: the list {whole} is set whole, not by element: write {whole}=[...] with every element"
    return ("a setting gives a mapping where a list is expected, or a list where a mapping is: check the lists in "
            f"the config files and KEY=VALUE settings{f' against {hint}' if hint else ''}")


@contextlib.contextmanager
def _one_line_errors(user_files: Sequence[str | Path], dotlist: Sequence[str], where_listed: str,
                     choices: dict[str, type[Enum]] | None = None):
    """Turn OmegaConf's and YAML's errors about the user's settings into one-line `UserError`s; a name outside a
    setting's `choices` is named with them."""
    try:
        yield
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        if key in (choices or {}):
            names = ", ".join(member.value for member in choices[key])
            raise UserError(f"{key} must be one of {names}, got {getattr(e, 'value', None)!r}") from None
        where = f" `{key}`" if key else ""
        raise UserError(f"invalid setting{where}: {str(e).splitlines()[0]}{where_listed}") from None
    except yaml.YAMLError as e:
        raise UserError(yaml_error_line(e, list(dotlist))) from None
    except UnicodeDecodeError:
        raise UserError(f"a config file is not UTF-8 text: check the config files {', '.join(map(str, user_files))}") from None


def load_edit_config(
    files: list[str | Path] = (), overrides: dict[str, Any] | None = None, dotlist: list[str] = (), model: str | None = None
) -> EditConfig:
    """`load_config` for edits: the schema's defaults, then what the chosen model changes (`model_defaults_file`)."""
    # The model's defaults come before the user's files, but which model it is may be set anywhere.
    chosen = model
    hint = "`ccedit edit --help`"
    with _one_line_errors(files, dotlist, f" (see {hint})"):
        for layer in (*(load_user_file(f, f" (see {hint})") for f in files if Path(f).is_file()), OmegaConf.create(overrides or {}),
                      OmegaConf.from_dotlist(list(dotlist))):
            chosen = OmegaConf.select(layer, "model.path", default=chosen)
    kind = kind_for(chosen or DEFAULT_MODEL)
    model_file = model_defaults_file(chosen or DEFAULT_MODEL)
    defaults = [kind.settings(), *([model_file] if model_file else [])]
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
    """The checks the schema's types cannot make: bounds, registry names, and settings that must agree."""
    check_numbers(config)
    check_annotator_names(config)
    check_scheduler_name(config)
    check_window(window_length(config), config.windows.overlap)
    s = config.sampling
    if not 0 < s.auto_keyframe_strength <= 1:
        raise UserError(f"sampling.auto_keyframe_strength must be in (0, 1], got {s.auto_keyframe_strength}")
    if not config.structure.annotators:
        raise UserError("structure.annotators is empty: name at least one, e.g. structure.annotators=[depth]")
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


def hierarchical_setting(config: EditConfig) -> bool | None:
    """`windows.hierarchical` for the pipeline: None (auto), True or False."""
    return {Hierarchical.auto: None, Hierarchical.true: True, Hierarchical.false: False}[config.windows.hierarchical]


def to_yaml(config: EditConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
