"""The evaluation schema: a benchmark, the methods, the metrics, the evaluation resolution and the output folder.

Loaded by `config.load_config` (one YAML merge for any schema), so YAML stays out of the package. Relative paths
are relative to the current folder, as for `ccedit edit`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError

BENCHMARK_FORMATS = ("balancecc", "loveu_csv", "loveu_json")


@dataclass
class BenchmarkConfig:
    # balancecc (JSON) | loveu_csv (one row per video, one column per edit type) | loveu_json (those rows in JSON)
    format: str = "balancecc"
    path: str = ""  # the benchmark file
    videos: str = ""  # folder holding <video name>.mp4 (or another video extension) or <video name>/ frame folders
    include: list[str] = field(default_factory=list)  # only these video names (empty: all)
    editing_types: list[str] = field(default_factory=list)  # only these editing types (empty: all)
    limit: int | None = None  # at most this many edits, in file order (after the filters)
    # loveu_csv / loveu_json: which columns hold the video name and the source prompt; every other column ending
    # in `edit_suffix` is one edit type (its name without the suffix). With `edit_suffix: ""` (the 2023 sheet as
    # published: video_name, num_frames, subset, style, object, background, multiple) the edit columns are those
    # named by an edit type: style, object, background, multiple. `edit_columns` names them instead.
    video_column: str = "Video name"
    source_column: str = "Our GT caption"
    edit_suffix: str = " Caption"
    edit_columns: list[str] = field(default_factory=list)
    # region edits: a mask spec per item, with the fields of a results-folder pattern ({video}, {edit}, ...), e.g.
    # `masks/{video}.png` (a file or folder per video) or `text:the {video}` (tracked by SAM 3, as `--mask`);
    # empty: no region. The ccedit method edits inside it and the locality metrics score outside it.
    mask: str = ""


@dataclass
class VideoSettings:
    """Which frames are evaluated, at what size: the source is read so, results are fitted to it, and every method
    edits exactly these frames (each receives them as its `video`, `methods.build_method`)."""

    num_frames: int | None = 16
    fps: float | None = None
    start: float = 0.0
    height: int | None = None
    width: int | None = None
    resize_mode: str = "crop"
    folder_fps: float = 8.0


@dataclass
class MethodSpec:
    name: str = ""  # the name in tables and the report
    type: str = ""  # a name of ccedit.methods.METHODS
    options: dict[str, Any] = field(default_factory=dict)  # the method's own options (see its docstring)


@dataclass
class ReportConfig:
    structure: str = "canny"  # annotator of the structure maps shown next to the source
    fps: float = 8.0  # frame rate of the report's clips


@dataclass
class EvalConfig:
    output: str = ""  # results folder: results.jsonl, summary.csv, summary.md, report.html, media/
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    video: VideoSettings = field(default_factory=VideoSettings)
    methods: list[MethodSpec] = field(default_factory=list)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # metric name -> its options (model, device, ...)
    report: ReportConfig = field(default_factory=ReportConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def load_eval_config(path: str | Path, dotlist: list[str] = ()) -> EvalConfig:
    """The evaluation settings of `path` with `key=value` overrides, checked before anything is read or built."""
    from ..config import load_config

    bad = [d for d in dotlist if "=" not in d]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: settings are KEY=VALUE, e.g. output=runs/eval")
    config = load_config(EvalConfig, user_files=[path], dotlist=list(dotlist), hint="configs/eval/tiny.yaml")
    validate(config)
    return config


def validate(config: EvalConfig) -> None:
    from ..methods import METHODS
    from ..metrics import METRICS

    if not config.output:
        raise UserError("no output folder: add output=DIR")
    b = config.benchmark
    if b.format not in BENCHMARK_FORMATS:
        raise UserError(f"unknown benchmark.format {b.format!r}: choose one of {', '.join(BENCHMARK_FORMATS)}")
    if not b.path:
        raise UserError("benchmark.path is empty: name the benchmark file (BalanceCC JSON or LOVEU-style CSV)")
    if not b.videos:
        raise UserError("benchmark.videos is empty: name the folder holding the benchmark's videos")
    if b.limit is not None and b.limit < 1:
        raise UserError(f"benchmark.limit must be at least 1 (null: no limit), got {b.limit}")
    if config.video.num_frames is not None and config.video.num_frames < 1:
        raise UserError(f"video.num_frames must be at least 1 (null: whole clips), got {config.video.num_frames}")
    if config.video.resize_mode not in ("crop", "pad"):
        raise UserError(f"video.resize_mode must be crop or pad, got {config.video.resize_mode!r}")
    if not config.methods:
        raise UserError("no methods: list at least one under `methods` (each with a name and a type)")
    names = [m.name for m in config.methods]
    for i, m in enumerate(config.methods):
        if not m.name:
            raise UserError(f"methods[{i}] has no name: give each method a name for the tables")
        if m.type not in METHODS:
            raise UserError(f"methods[{i}] ({m.name}): unknown method type {m.type!r}: choose one of "
                            f"{', '.join(sorted(METHODS))}")
        if not _is_file_name(m.name) or len(m.name) > 100:
            raise UserError(f"methods[{i}]: name {m.name!r} must be letters, digits, '-', '_' or '.' (at most 100)")
        _check_names(m.options, f"methods[{i}] ({m.name}): options")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"method names must differ: {', '.join(duplicates)} appears more than once")
    if not config.metrics:
        raise UserError(f"no metrics: name at least one under `metrics`, from {', '.join(sorted(METRICS))}")
    unknown = sorted(set(config.metrics) - set(METRICS))
    if unknown:
        raise UserError(f"unknown metric {unknown[0]!r}: choose from {', '.join(sorted(METRICS))}")
    for name, options in config.metrics.items():
        _check_names(options, f"metrics.{name}")


def _check_names(value: Any, where: str) -> None:
    """Every mapping inside a method's or metric's options is keyed by names (text): YAML's `1:` or `true:` keys
    would otherwise reach the options, and sorting or hashing a mix of keys fails far from the config."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str):
                raise UserError(f"{where} has the key {key!r} ({type(key).__name__}): option names are text; quote "
                                "it or fix the config")
            _check_names(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_names(inner, f"{where}[{i}]")


def _is_file_name(name: str) -> bool:
    return all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
