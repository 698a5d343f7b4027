"""`ccedit eval`: every method on every benchmark item, scored by every metric, one results row per pair.

Work is split by item over the processes `accelerate launch` starts (each process runs every pending method of
its items, so a source clip is read once); each appends its rows to its own file; the first process merges them
and writes the tables and the report. A pair whose key (the item's inputs and the method's resolved settings) has
a finished row is skipped: no edit and no metric is redone. A failing pair is recorded with its error.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import EditConfig, EditJob, VideoConfig
from ..errors import UserError
from ..io import fit_frames
from ..io.atomic import exclusive_folder
from ..methods import Method, MethodOutput, build_method
from ..metrics import EditSample, Metric, build_metric
from . import results as store
from .benchmark import BenchmarkItem, read_benchmark, video_path
from .config import EvalConfig

logger = logging.getLogger(__name__)


@dataclass
class Unit:
    """One (item, method) pair and its resume key."""

    item: BenchmarkItem
    method: str
    key: str


@dataclass
class EvalRun:
    """What a run did: rows of the current items and methods, and counts for the closing line."""

    output: Path
    rows: list[dict]
    done_now: int
    skipped: int
    failed: int
    seconds: float
    is_main: bool = True


def run_settings(config: EvalConfig) -> dict:
    """The settings that make rows comparable; an output folder holding rows of other settings is refused."""
    return {"video": asdict(config.video), "metrics": config.metrics, "report": asdict(config.report)}


def build_methods(config: EvalConfig) -> dict[str, Method]:
    """The evaluation's methods, each given the frame selection the metrics see (`source_settings`), so every method
    edits the same frames, size and crop or pad."""
    methods = {}
    for spec in config.methods:
        try:
            methods[spec.name] = build_method(spec.type, frame_selection(config), **dict(spec.options))
        except UserError as e:
            raise UserError(f"method {spec.name!r}: {e}") from None
    return methods


def build_metrics(config: EvalConfig) -> dict[str, Metric]:
    metrics = {}
    for name, options in config.metrics.items():
        metrics[name] = build_metric(name, **dict(options or {}))
    return metrics


def frame_selection(config: EvalConfig) -> VideoConfig:
    """The evaluation's `video` section as the edit schema's: which frames are evaluated, at what size."""
    return VideoConfig(**asdict(config.video))


def source_settings(config: EvalConfig) -> EditConfig:
    """How the source clips are read: the evaluation's frame selection, through the edit's own reader."""
    cfg = EditConfig()
    cfg.video = frame_selection(config)
    return cfg


def run_evaluation(config: EvalConfig, *, overwrite: bool = False, progress: bool = True) -> EvalRun:
    """Run (or resume) the evaluation `config` describes; returns the rows of its items and methods."""
    from accelerate import PartialState

    started = time.perf_counter()
    output = Path(config.output).expanduser()
    settings = run_settings(config)
    # Checks that read nothing big come first: the folder, the benchmark file, the methods' and metrics' settings.
    store.check_output(output, settings, overwrite=overwrite)
    items = read_benchmark(config.benchmark)
    if not items:
        raise UserError(f"no items: {config.benchmark.path} lists no edits that pass benchmark.include, "
                        "benchmark.editing_types and benchmark.limit")
    methods = build_methods(config)
    metrics = build_metrics(config)

    # As in training: on a machine without CUDA the processes `accelerate launch` starts join over gloo.
    state = PartialState(cpu=not torch.cuda.is_available())
    with contextlib.ExitStack() as held:
        if state.is_main_process:
            # One evaluation writes into a folder at a time; the first process holds the lock for the whole run.
            try:
                output.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise UserError(f"cannot create the output folder {output}: {error.strerror}; change output=") from None
            busy = f"another ccedit eval is writing into {output}: wait for it to finish or choose another output"
            held.enter_context(exclusive_folder(output, busy))
            store.start_output(output, settings, overwrite=overwrite)
        state.wait_for_everyone()
        return _evaluate(config, output, items, methods, metrics, state, progress, started)


def _evaluate(config: EvalConfig, output: Path, items: list[BenchmarkItem], methods: dict[str, Method],
              metrics: dict[str, Metric], state, progress: bool, started: float) -> EvalRun:
    """Run the pending units of `output` (created, and locked by the first process) and write the tables."""
    units = plan_units(config, items, methods)
    rows = store.read_rows(output, warn=state.is_main_process)
    finished = {k for k, row in store.latest_by_key(rows).items() if row["status"] == "ok"}
    pending = [u for u in units if u.key not in finished]
    # Whole items go to a process, round robin, so each source clip is read by one process only.
    pending_items = list(dict.fromkeys(u.item for u in pending))
    mine = [u for u in pending if pending_items.index(u.item) % state.num_processes == state.process_index]
    target = output / (store.RESULTS if state.num_processes == 1 else store.part_name(state.process_index))
    writer = store.RowWriter(target)
    evaluator = ItemEvaluator(config, output, methods, metrics)
    if pending:  # every process, so that all of them stop alike when a model is missing
        evaluator.prepare()
    failed = 0
    from tqdm import tqdm

    bar = tqdm(mine, desc=f"evaluating{f' [{state.process_index}]' if state.num_processes > 1 else ''}",
               unit="edit", disable=not progress or not mine, position=state.process_index)
    for unit in bar:
        row = evaluator.evaluate(unit)
        failed += row["status"] != "ok"
        writer.append(row)
    bar.close()

    state.wait_for_everyone()
    run = EvalRun(output, [], done_now=len(pending), skipped=len(units) - len(pending), failed=failed,
                  seconds=time.perf_counter() - started, is_main=state.is_main_process)
    if state.is_main_process:
        from .report import write_report
        from .summary import write_summary

        merged = store.merge(output)
        latest = {row["key"]: row for row in merged}
        run.rows = [latest[u.key] for u in units if u.key in latest]
        run.failed = sum(row["status"] != "ok" for row in run.rows)
        # The tables and the report cover every result in the folder, not only this run's selection.
        shown = store.rows_to_show(merged, run.rows)
        write_summary(output, shown, list(metrics))
        write_report(output, shown, list(metrics), config, selected=len(run.rows))
        run.seconds = time.perf_counter() - started
    state.wait_for_everyone()
    return run


def plan_units(config: EvalConfig, items: list[BenchmarkItem], methods: dict[str, Method]) -> list[Unit]:
    """Every (item, method) pair with its key: the item's inputs (the clip's content included) and the method's
    resolved settings and own inputs."""
    fingerprints: dict[str, str | None] = {}
    units = []
    for item in items:
        path = video_path(config.benchmark.videos, item.video)
        if item.video not in fingerprints:
            fingerprints[item.video] = store.file_fingerprint(path)
        # an item without a mask keeps the key it had before items could carry one (finished work is not redone)
        inputs = {k: v for k, v in asdict(item).items() if k != "mask" or v is not None}
        inputs["clip"] = fingerprints[item.video]
        job = item_job(config, item)
        for name, method in methods.items():
            key = store.stable_hash({"item": inputs, "method": method.describe(),
                                     "method_inputs": method.item_inputs(job, item.fields())})
            units.append(Unit(item, name, key))
    return units


def item_job(config: EvalConfig, item: BenchmarkItem) -> EditJob:
    return EditJob(input=str(video_path(config.benchmark.videos, item.video)), prompt=item.target_prompt,
                   mask=item.mask)


class ItemEvaluator:
    """Runs one method on one item, scores it, writes its media; keeps the current source clip in memory."""

    def __init__(self, config: EvalConfig, output: Path, methods: dict[str, Method], metrics: dict[str, Metric]):
        self.config, self.output, self.methods, self.metrics = config, output, methods, metrics
        self._source: tuple[str, Any] | None = None
        self._annotator = None

    def prepare(self) -> None:
        """Load every method's and metric's models and the report's annotator now, before the first edit: a model
        that is missing or cannot be fetched is one line at once, not a failure of every item after its edit."""
        from ..annotators import build_annotator

        parts = [(f"method {name!r}", method.prepare) for name, method in self.methods.items()]
        parts += [(f"metric {name!r}", metric.prepare) for name, metric in self.metrics.items()]
        parts.append(("report.structure", lambda: setattr(self, "_annotator", build_annotator(
            self.config.report.structure))))
        for what, load in parts:
            try:
                load()
            except UserError as e:
                message = str(e)
                raise UserError(message if message.startswith(what) else f"{what}: {message}") from None
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # weights that cannot be read: the run would fail every item the same way
                logger.debug("loading %s failed", what, exc_info=True)
                reason = str(e).splitlines()[0] if str(e) else ""
                raise UserError(f"{what} cannot load its model ({type(e).__name__}: {reason}); fix its options "
                                "before evaluating") from None

    def source(self, item: BenchmarkItem):
        """The item's source clip at the evaluation size (read once per video)."""
        from ..editing import prepare_clip

        if self._source is None or self._source[0] != item.video:
            try:
                prepared = prepare_clip(video_path(self.config.benchmark.videos, item.video),
                                        source_settings(self.config))
            except UserError as e:
                self._source = (item.video, e)  # every edit of this video fails with the same line, unread again
                raise
            self._source = (item.video, prepared)
            self.write_source_media(item, prepared)
        if isinstance(self._source[1], UserError):
            raise self._source[1]
        return self._source[1]

    def mask(self, item: BenchmarkItem, source) -> np.ndarray | None:
        """The item's region at the evaluation's frames (`masks.load_masks`, as an edit loads it: files fitted like
        the frames, concepts and clicks tracked through the structure cache), unshaped: the locality metrics'
        `margin` stands for any feather; None without one."""
        if item.mask is None:
            return None
        from ..masks import load_masks

        cache = source_settings(self.config).structure.cache_dir
        return load_masks(item.mask, source.frames, source.fit, cache_dir=cache).hard

    def evaluate(self, unit: Unit) -> dict:
        item = unit.item
        row: dict[str, Any] = {
            "key": unit.key, "method": unit.method, "item": item.id, "video": item.video, "edit": item.edit,
            "editing_type": item.editing_type, "video_type": item.video_type, "fantasy_level": item.fantasy_level,
            "source_prompt": item.source_prompt, "target_prompt": item.target_prompt,
        }
        try:
            source = self.source(item)
            out = self.methods[unit.method].run(item_job(self.config, item), item.fields())
            frames, keyframes = fit_output(out, source.frames, self.config.video.resize_mode)
            sample = EditSample(frames=frames, prompt=item.target_prompt, source_frames=source.frames,
                                source_prompt=item.source_prompt, keyframes=keyframes, mask=self.mask(item, source))
            scores, records = {}, {}
            for name, metric in self.metrics.items():
                applicable = "keyframes" not in metric.requires or keyframes
                scores[name] = finite(metric(sample)) if applicable else None
                records[name] = metric.describe()
            media = self.media_path(item, unit.method)
            self.write_clip(media, frames)
            row.update(status="ok", error=None, scores=scores, metrics=records, num_frames=int(len(frames)),
                       size=list(frames.shape[1:3]), media=str(media.relative_to(self.output)),
                       cost={"seconds_per_frame": None if out.seconds is None else out.seconds / len(frames),
                             "peak_memory_bytes": out.peak_memory_bytes})
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # a failing item is recorded and the run goes on
            message = str(e).splitlines()[0] if str(e) else ""
            if not isinstance(e, UserError):
                message = f"{type(e).__name__}: {message}"
                logger.debug("item %s, method %s failed", item.id, unit.method, exc_info=True)
            logger.warning("%s with %s failed: %s", item.id, unit.method, message)
            row.update(status="failed", error=message, scores={}, metrics={}, media=None, cost={})
        return row

    def media_path(self, item: BenchmarkItem, method: str) -> Path:
        return self.output / store.MEDIA / store.slug(item.video) / str(item.edit) / f"{store.slug(method)}.mp4"

    def write_clip(self, path: Path, frames: np.ndarray) -> None:
        from ..io import atomic_path, write_video

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            write_video(tmp, frames, self.config.report.fps)

    def write_source_media(self, item: BenchmarkItem, prepared) -> None:
        """The source clip and its structure map for the report, once per video."""
        folder = self.output / store.MEDIA / store.slug(item.video)
        if not (folder / "source.mp4").is_file():
            self.write_clip(folder / "source.mp4", prepared.frames)
        if not (folder / "structure.mp4").is_file():
            self.write_clip(folder / "structure.mp4", self.structure(prepared.frames))

    def structure(self, frames: np.ndarray) -> np.ndarray:
        from ..annotators import build_annotator
        from ..annotators.maps import held_maps

        if self._annotator is None:
            self._annotator = build_annotator(self.config.report.structure)
        return held_maps(self._annotator, frames).permute(0, 2, 3, 1).numpy()


def fit_output(out: MethodOutput, source: np.ndarray, mode: str = "crop") -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The result (and its keyframes) at the source's size, fitted as the source was (`mode`: crop or pad); a result
    of another length is refused."""
    if len(out.frames) != len(source):
        raise UserError(f"the result has {len(out.frames)} frames and the evaluated source {len(source)}: "
                        "make results of the same frames (or set video.num_frames to their length)")
    size = source.shape[1:3]
    frames = out.frames if out.frames.shape[1:3] == size else fit_frames(out.frames, size, mode)[0]
    keyframes = {i: image if image.shape[:2] == size else fit_frames(image[None], size, mode)[0][0]
                 for i, image in out.keyframes.items()}
    return frames, keyframes


def finite(value: float) -> float | None:
    """A score as JSON can hold it: NaN or infinity (a degenerate clip) become null."""
    return value if math.isfinite(value) else None
