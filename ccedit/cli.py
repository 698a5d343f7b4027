"""`ccedit` command line: edit | keyframe | convert | train | eval | models | env | batch | ui. Each subcommand is a thin call into the library."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import signal
import sys
import textwrap
import warnings
from enum import Enum
from pathlib import Path

from . import __version__
from .errors import UserError

logger = logging.getLogger("ccedit")


# The flags that set an edit setting, and the setting each sets: the one place where flags meet settings. The
# library's messages name settings; `main` adds the flag beside each setting a message names.
SETTING_FLAGS = {
    "--model": "model.path",
    "--force": "model.check_memory",
    "--frames": "video.num_frames",
    "--fps": "video.fps",
    "--start": "video.start",
    "--height": "video.height",
    "--width": "video.width",
    "--window": "windows.length",
    "--overlap": "windows.overlap",
    "--structure": "structure.annotators",
    "--structure-scale": "structure.scales",
    "--steps": "sampling.num_inference_steps",
    "--seed": "sampling.seed",
    "--side-by-side": "output.side_by_side",
    "--dump-conditions": "output.conditions",
    "--mask": "mask.spec",
    "--remove": "mask.remove",
    "--reference": "sampling.references",
}
# How a flag's value becomes its setting's, where they differ.
_FLAG_VALUES = {
    "--force": lambda force: not force,
    "--structure": lambda names: [n.strip() for n in names.split(",") if n.strip()],
}


def _scales(text: str) -> list[float]:
    """`--structure-scale`'s value: one number, or one per annotator, comma-separated."""
    try:
        return [float(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0.8 or 1,0.5; got {text!r}") from None


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line and exit code 2, like every other user error."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default once: the one its help states, else argparse's, unless there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if "default" in (action.help or "") or action.default in (None, False, [], argparse.SUPPRESS):
            return action.help or ""
        return super()._get_help_string(action)


class _SettingsHelpFormatter(argparse.RawDescriptionHelpFormatter, _HelpFormatter):
    """`_HelpFormatter` that keeps the epilog's lines (the settings list) as written."""


def _settings_epilog() -> str:
    """Every edit setting as `key (default): help`, from the schema: the one place defaults are written."""
    from .config import schema_settings

    lines = ["settings (KEY=VALUE or --config YAML; configs/model/<name>.yaml changes a few for a named model):"]
    for key, default, text in schema_settings():
        lines += textwrap.wrap(f"{key} ({_shown(default)}): {text}", width=110, initial_indent="  ",
                               subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)


def _shown(value) -> str:
    """A default as it is written in YAML or KEY=VALUE."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str):  # bare unless YAML would read it otherwise (empty, spaces, commas)
        return value if re.fullmatch(r"[\w./~-]+", value) else json.dumps(value)
    return json.dumps(value) if value is None or isinstance(value, (bool, list, dict)) else str(value)


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    """Options that decide which frames are used and at what size: shared by `edit` and `keyframe`."""
    _add_model_options(p)
    p.add_argument("--frames", type=int, metavar="N", help="number of frames to edit (default: the whole clip)")
    p.add_argument("--fps", type=float, metavar="F", help="take every round(source_fps / F)-th frame (default: all)")
    p.add_argument("--start", type=float, metavar="SECONDS", help="start time (default: 0)")
    p.add_argument("--height", type=int, metavar="H", help="working height, fitted to a multiple of model.size_multiple (default: from the aspect ratio)")
    p.add_argument("--width", type=int, metavar="W", help="working width, fitted to a multiple of model.size_multiple (default: from the aspect ratio)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--force", action="store_true",
                   help="run even when the memory estimate exceeds what is available (model.check_memory=false)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any setting, e.g. sampling.guidance_scale=9")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """The options that choose the model and the settings files: shared by `edit`, `keyframe` and `models`."""
    from .kinds.registry import DEFAULT_MODEL, models_help

    p.add_argument("--model", help=f"{models_help()} (default: {DEFAULT_MODEL})")
    p.add_argument("--config", action="append", default=[], metavar="YAML", help="settings file (repeatable; later wins)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ccedit", description="Controllable video editing with the CCEdit trident network.")
    parser.add_argument("--version", action="version", version=f"ccedit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    _add_edit_parser(sub)
    _add_keyframe_parser(sub)
    _add_convert_parser(sub)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_models_parser(sub)
    env = sub.add_parser("env", help="print versions and devices, for bug reports")
    env.set_defaults(func=cmd_env)
    _add_queue_commands(sub)
    for subcommand in sub.choices.values():
        # Also after the subcommand; SUPPRESS keeps a `-v` given before it from being reset to False.
        subcommand.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                                help="more log output")
    return parser


def _add_edit_parser(sub) -> None:
    """`ccedit edit`: the job's arguments, the flags of common settings, and every setting in the epilog."""
    edit = sub.add_parser("edit", help="edit a video with a text prompt (and optionally an edited keyframe)",
                          formatter_class=_SettingsHelpFormatter, epilog=_settings_epilog())
    edit.add_argument("input", help="video file (mp4, mov, webm, mkv, avi, gif) or folder of frames")
    edit.add_argument("--prompt", help='target description, e.g. "a watercolor painting" (required, except with '
                      '--remove)')
    edit.add_argument("-o", "--output", help="output mp4 (default: <input name>.ccedit.mp4 in the current folder)")
    edit.add_argument("--keyframe", action="append", default=[], metavar="IMAGE[@K|@match]",
                      help="edited keyframe showing frame K, whose look is spread over the video; repeatable; "
                      "IMAGE@match finds the frame whose structure the image matches (refused when unsure); "
                      "`auto` edits frame K from the prompt and saves it beside the output (default K: centre frame)")
    edit.add_argument("--keyframe-index", type=int, metavar="K", help="frame a single --keyframe IMAGE shows")
    edit.add_argument("--reference", action="append", metavar="IMAGE",
                      help="a reference image (a subject, a style) the edit should show, for models that take them; "
                      "repeatable")
    edit.add_argument("--window", type=int, metavar="N",
                      help="frames per network call; longer clips go in overlapping windows (default: the model's)")
    edit.add_argument("--overlap", type=int, metavar="N", help="frames shared by neighbouring windows (default: N/4)")
    edit.add_argument("--structure", metavar="NAME[,NAME]", help="structure annotators: depth, canny, lineart, "
                      "softedge, midas, zoe, depth_dpt (default: depth; canny for the tiny model)")
    edit.add_argument("--structure-scale", type=_scales, metavar="S[,S]",
                      help="strength of the structure maps: one for every annotator, or one per annotator (default: 1)")
    edit.add_argument("--steps", type=int, metavar="N", help="denoising steps (default: 30; 4 for the tiny model)")
    edit.add_argument("--seed", type=int, metavar="S", help="random seed (same seed, same output) (default: 0)")
    edit.add_argument("--side-by-side", action="store_true", help="also write source | each structure map | each keyframe | result, labelled")
    edit.add_argument("--dump-conditions", action="store_true",
                      help="also write OUT.conditions/: the structure maps, keyframes and SDEdit frames each network "
                      "received, window by window, with a JSON of frame indices and value ranges")
    edit.add_argument("--mask", metavar="SPEC",
                      help="edit only a region: a mask video, frame folder or image (PATH), a mask of frame K tracked "
                      "through the clip (IMAGE@K), a concept found and tracked (text:WORDS), a click (point:K,x,y) or "
                      "a box (box:K,x0,y0,x1,y1) on frame K in source pixels; outside it the source is kept exactly")
    edit.add_argument("--remove", action="store_true",
                      help="remove what --mask marks: fill it from its surroundings and paint it with "
                      "mask.background_prompt")
    edit.add_argument("--dry-run", action="store_true",
                      help="print the plan (passes, windows, network calls) and estimated peak memory; load no model")
    _add_sampling_options(edit)
    edit.set_defaults(func=cmd_edit)


def _add_keyframe_parser(sub) -> None:
    """`ccedit keyframe`: the frame an edit will use, or the frame an edited image shows."""
    key = sub.add_parser("keyframe", help="write the frame an edit will use, for editing in another program (or, "
                         "with --match, find the frame an edited image shows)", formatter_class=_HelpFormatter)
    key.add_argument("input", help="video file or folder of frames")
    key.add_argument("--match", metavar="IMAGE", help="write nothing: find the frame an edited IMAGE shows (by its "
                     "structure) and say how sure that is")
    key.add_argument("--index", type=int, metavar="K", help="frame index within the edit's frames (default: centre frame)")
    key.add_argument("-o", "--output", help="output image (default: <input name>.keyframe.png in the current folder, "
                     "<input name>.keyframe<K>.png with --index K)")
    _add_sampling_options(key)
    key.set_defaults(func=cmd_keyframe)


def _add_convert_parser(sub) -> None:
    """`ccedit convert`: a released CCEdit checkpoint to a model folder."""
    conv = sub.add_parser("convert", help="turn a released CCEdit checkpoint into a ccedit model folder",
                          formatter_class=_HelpFormatter)
    conv.add_argument("checkpoint", help="a CCEdit .ckpt, or a safetensors state dict in CCEdit's key names")
    conv.add_argument("--out", required=True, help="model folder to write")
    conv.add_argument("--geometry", help="geometry JSON for a state dict that is not SD-1.5 sized (e.g. the tiny fixtures)")
    conv.add_argument("--tokenizer", default="stable-diffusion-v1-5/stable-diffusion-v1-5",
                      help="tokenizer path or hub id (the checkpoint holds none); with a hub id, `/tokenizer` is used")
    conv.add_argument("--dtype", choices=["keep", "float32", "float16", "bfloat16"], default="keep",
                      help="cast the weights")
    conv.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    conv.set_defaults(func=cmd_convert)


def _add_train_parser(sub) -> None:
    """`ccedit train`: a training run from a settings file."""
    tr = sub.add_parser("train", help="train the temporal layers or the keyframe model's parts on your videos",
                        formatter_class=_HelpFormatter)
    tr.add_argument("config", help="training settings (YAML), e.g. configs/train/tiny.yaml")
    tr.add_argument("--resume", action="store_true",
                    help="continue the run in output= from its newest intact checkpoint (a damaged newer one is named "
                    "and skipped)")
    tr.add_argument("--overwrite", action="store_true",
                    help="start the run in output= over: removes its config.yaml, losses.jsonl, checkpoints/, model/, "
                    "samples/, data/ and logs; a folder that is not a ccedit training run is never replaced")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any setting, e.g. output=runs/a train.max_steps=50")
    tr.set_defaults(func=cmd_train)


def _add_eval_parser(sub) -> None:
    """`ccedit eval`: methods over a benchmark."""
    ev = sub.add_parser("eval", help="run methods over a benchmark: scores, tables and an HTML report",
                        formatter_class=_HelpFormatter,
                        epilog="exit status: 0 when every selected edit is scored, 1 when some failed (each with its "
                        "error in results.jsonl and report.html), 2 when the settings, the benchmark, the output "
                        "folder or a model is refused before any edit")
    ev.add_argument("config", help="evaluation settings (YAML), e.g. configs/eval/tiny.yaml")
    ev.add_argument("--overwrite", action="store_true",
                    help="discard results of different settings in the output folder (same settings: resumed)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any setting, e.g. output=runs/eval")
    ev.set_defaults(func=cmd_eval)


def _add_models_parser(sub) -> None:
    """`ccedit models`: the configured model's parts."""
    models = sub.add_parser("models", help="show the configured model and where each of its parts comes from",
                            formatter_class=_HelpFormatter)
    _add_model_options(models)
    models.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="any setting, e.g. model.lora=[...]")
    models.set_defaults(func=cmd_models)


def _add_queue_commands(sub) -> None:
    """`batch` and `ui`: edits through a work folder's job queue (ccedit/jobs, ccedit/ui)."""
    from .ui.limits import DEFAULT_MAX_UPLOAD_MB  # light: Gradio and the models load only when the studio starts

    batch = sub.add_parser("batch", help="run the edits of a jobs file (YAML or CSV) through a resumable job queue",
                           formatter_class=_HelpFormatter,
                           epilog="exit status: 0 when every job is done, 1 when some failed (each with its error), 2 "
                           "when a row is refused before any model loads")
    batch.add_argument("jobs", help="YAML list of jobs, or CSV with the columns clip, prompt, keyframes, output, "
                       "settings (paths relative to the file's folder)")
    batch.add_argument("--work-dir", default="ccedit-work", metavar="W",
                       help="work folder: the queue (jobs.sqlite) and the outputs (outputs/)")
    batch.add_argument("--model", help="model for every job (a job's model.path= setting wins) (default: tiny)")
    batch.add_argument("--overwrite", action="store_true", help="run finished jobs again and replace their outputs")
    batch.add_argument("--no-progress", action="store_true", help="no progress bars")
    batch.set_defaults(func=cmd_batch)

    ui = sub.add_parser("ui", help="the editing studio in a web browser (needs the [ui] extra: gradio)",
                        formatter_class=_HelpFormatter)
    ui.add_argument("--model", help="model loaded once for every request (default: tiny)")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (other machines: 0.0.0.0)")
    ui.add_argument("--port", type=int, default=7860, metavar="P", help="port to serve on")
    ui.add_argument("--work-dir", default="ccedit-work", metavar="W", help="work folder: queue, inputs and outputs")
    ui.add_argument("--allow", action="append", default=[], metavar="DIR",
                    help="a folder whose clips may be opened by path (repeatable; default: none, uploads only)")
    ui.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, metavar="MB",
                    help="largest clip or keyframe image a browser may upload")
    ui.set_defaults(func=cmd_ui)


def cmd_batch(args: argparse.Namespace) -> int:
    from .jobs import run_batch

    _refuse_settings(args, "give each job its settings in the jobs file's settings field")
    run = run_batch(args.jobs, args.work_dir, model=args.model, overwrite=args.overwrite,
                    progress=not args.no_progress)
    if run.is_main:
        for output, error in run.failed:
            print(f"failed: {output}: {error}", file=sys.stderr)
        failed = f", {len(run.failed)} failed" if run.failed else ""
        print(f"ran {run.done_now} jobs, {run.already_done} already done{failed}, in {run.seconds:.1f} s: "
              f"{Path(args.work_dir) / 'outputs'}")
    return 1 if run.failed else 0


def cmd_ui(args: argparse.Namespace) -> int:
    from .ui import serve
    from .ui.limits import upload_limit_bytes

    _refuse_settings(args, "the studio takes each edit's settings in the page")
    upload_limit_bytes(args.max_upload_mb)  # refused before Gradio, torch and the model load
    serve(model=args.model, host=args.host, port=args.port, work=args.work_dir, allowed=args.allow,
          max_upload_mb=args.max_upload_mb)
    return 0


def _refuse_settings(args: argparse.Namespace, where: str) -> None:
    if getattr(args, "overrides", None):
        raise UserError(f"unexpected argument {args.overrides[0]!r}: {where}")


def _flag_overrides(args: argparse.Namespace) -> dict:
    """The setting flags given (`SETTING_FLAGS`) as a nested config dict."""
    overrides: dict = {}
    for flag, key in SETTING_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if value is None or value is False:  # not given (store_true flags are False when absent)
            continue
        section, name = key.split(".")
        overrides.setdefault(section, {})[name] = _FLAG_VALUES.get(flag, lambda given: given)(value)
    return overrides


def _naming_flags(message: str, args: argparse.Namespace) -> str:
    """`message` with its command's flag beside the first mention of each setting that has one, e.g.
    `video.num_frames (--frames)` or `model.check_memory=false (--force)`: the library names settings only. A
    setting quoted back as the user wrote it is left as written."""
    for flag, key in SETTING_FLAGS.items():
        if flag in message or not hasattr(args, _dest(flag)):  # already named, or not a flag of this command
            continue
        mention = rf"(?<![\w.'\"`]){re.escape(key)}(=[^\s,;)]*)?(?![\w.])"
        message = re.sub(mention, lambda found: f"{found.group(0)} ({flag})", message, count=1)
    return message


def _dest(flag: str) -> str:
    """The attribute argparse stores a flag's value under."""
    return flag.removeprefix("--").replace("-", "_")


def _load_config(args: argparse.Namespace):
    from .config import load_edit_config

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: settings are KEY=VALUE, e.g. sampling.guidance_scale=9")
    return load_edit_config(args.config, _flag_overrides(args), args.overrides)


def cmd_edit(args: argparse.Namespace) -> int:
    from .config import KeyframeSpec

    cfg = _load_config(args)
    if args.prompt is None and not cfg.mask.remove:
        raise UserError("--prompt is missing: say what the edit should show, e.g. --prompt \"a watercolor painting\"")
    output = Path(args.output) if args.output else Path.cwd() / f"{Path(args.input).stem}.ccedit.mp4"
    if args.keyframe_index is not None and len(args.keyframe) != 1:
        raise UserError("--keyframe-index goes with exactly one --keyframe IMAGE; for several write IMAGE@INDEX")
    keyframes = [KeyframeSpec.parse(k, args.keyframe_index) for k in args.keyframe]
    if args.dry_run:
        from .plan import dry_run

        print("\n".join(dry_run(args.input, cfg, keyframes)))
        return 0
    from .edit_checks import check_edit_request

    # Before the imports of torch and the diffusion libraries, which take seconds.
    check_edit_request(args.input, output, cfg, overwrite=args.overwrite, keyframes=keyframes)
    from .editing import run_edit

    sidecar = run_edit(args.input, args.prompt or "", output, cfg, keyframes=keyframes, overwrite=args.overwrite)
    t = sidecar["timings_seconds"]
    print(f"wrote {output} ({sidecar['video']['num_frames']} frames, {sidecar['video']['working_size'][1]}x"
          f"{sidecar['video']['working_size'][0]}, {sidecar['video']['fps']:g} fps) in {t['wall']:.1f} s")
    return 0


def cmd_keyframe(args: argparse.Namespace) -> int:
    from .edit_checks import check_keyframe_request

    if args.match is not None:
        return _match_keyframe(args)
    cfg = _load_config(args)
    default = Path.cwd() / f"{Path(args.input).stem}.keyframe{'' if args.index is None else args.index}.png"
    output = Path(args.output) if args.output else default
    check_keyframe_request(args.input, output, overwrite=args.overwrite)  # before the heavy imports
    from .editing import extract_keyframe

    index = extract_keyframe(args.input, output, cfg, args.index, args.overwrite)
    print(f"wrote {output} (frame {index}); edit it, then: {_edit_command(args, output, index)}")
    return 0


def _edit_command(args: argparse.Namespace, keyframe: Path | str, index: int) -> str:
    """The follow-up `ccedit edit`: it repeats every option that selects the frames, so the keyframe lands on this
    frame."""
    selection = [f"--{flag} {getattr(args, flag)}" for flag in ("model", "frames", "fps", "start", "height", "width")
                 if getattr(args, flag, None) is not None]
    selection += [f"--config {c}" for c in args.config] + list(args.overrides)
    return " ".join(["ccedit edit", shlex.quote(str(args.input)), "--keyframe", shlex.quote(f"{keyframe}@{index}"),
                     *selection, '--prompt "..."'])


def _match_keyframe(args: argparse.Namespace) -> int:
    """`ccedit keyframe INPUT --match IMAGE`: the frame IMAGE shows, how sure, and the edit command when sure."""
    from .editing import find_keyframe_frame

    if args.index is not None or args.output is not None:
        raise UserError("--match finds the frame and writes nothing: drop --index and -o")
    found = find_keyframe_frame(args.input, args.match, _load_config(args))
    follow_up = f"; edit with: {_edit_command(args, args.match, found.best)}" if found.sure else ""
    print(found.describe(args.match) + follow_up)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .convert.convert import convert_checkpoint

    summary = convert_checkpoint(
        args.checkpoint, args.out, geometry_file=args.geometry, tokenizer=args.tokenizer,
        dtype=args.dtype, overwrite=args.overwrite,
    )
    print(summary)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import load_train_config, train

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: settings are KEY=VALUE, e.g. output=runs/a")
    result = train(load_train_config(args.config, args.overrides), resume=args.resume, overwrite=args.overwrite)
    skipped = f", {result.skipped_videos} unusable videos skipped" if result.skipped_videos else ""
    print(f"trained {result.step} steps into {result.output}{skipped}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval import load_eval_config, run_evaluation

    run = run_evaluation(load_eval_config(args.config, args.overrides), overwrite=args.overwrite,
                         progress=not args.no_progress)
    if run.is_main:
        failed = f", {run.failed} failed (see results.jsonl)" if run.failed else ""
        print(f"evaluated {run.done_now} edits, {run.skipped} already done{failed}, in {run.seconds:.1f} s: "
              f"{run.output / 'summary.md'}, {run.output / 'report.html'}")
    return 1 if run.failed else 0  # failed rows are a result, not a refused input: 1, not 2


def cmd_models(args: argparse.Namespace) -> int:
    from .catalog import format_parts

    print(format_parts(_load_config(args)))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    from .versions import torchvision_mismatch

    mismatch = torchvision_mismatch()  # first: with it, the imports below may fail
    if mismatch:
        print(f"problem: {mismatch}")
    import torch

    from .editing import package_versions

    for name, version in package_versions().items():
        print(f"{name}: {version}")
    print(f"cuda available: {torch.cuda.is_available()}")
    for i in range(torch.cuda.device_count()):
        print(f"  cuda:{i}: {torch.cuda.get_device_name(i)}")
    print(f"cpu threads: {torch.get_num_threads()}")
    return 0


# The libraries whose warnings are not the user's business, and the variable each reads its log level from.
_LIBRARY_VERBOSITY = {"diffusers": "DIFFUSERS_VERBOSITY", "transformers": "TRANSFORMERS_VERBOSITY",
                      "huggingface_hub": "HF_HUB_VERBOSITY"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Settings like `sampling.seed=3` may sit between or after the flags: argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if "=" not in e or e.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*getattr(args, "overrides", []), *extra]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s",
                        stream=sys.stderr)
    for noisy, verbosity in _LIBRARY_VERBOSITY.items():
        logging.getLogger(noisy).setLevel(logging.ERROR)
        if not args.verbose:
            # These libraries set their loggers' level when first imported, which comes after this, from these
            # variables (a user's own setting is kept).
            os.environ.setdefault(verbosity, "error")
    if not args.verbose:
        # Deprecation notes and optional-dependency hints of the libraries below are not the user's business.
        warnings.filterwarnings("ignore", module=r"(huggingface_hub|controlnet_aux|timm|diffusers|transformers|torch)(\..*)?$")
    previous_sigterm = _handle_sigterm_like_ctrl_c()
    try:
        if args.func is not cmd_env:  # `env` reports it among the versions instead
            from .versions import check_torchvision

            check_torchvision()  # a mismatched torchvision would fail later, deep in an import, with a traceback
        return args.func(args)
    except UserError as e:
        print(f"error: {_naming_flags(str(e), args)}", file=sys.stderr)
        return 2
    except _Terminated:
        print("terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same cleanup (staged outputs, temporaries) runs."""


def _handle_sigterm_like_ctrl_c():
    """Turn SIGTERM into `_Terminated`; returns the previous handler (None when not in the main thread)."""
    def terminate(signum, frame):
        raise _Terminated()

    try:
        return signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # signal handlers can only be set from the main thread
        return None


if __name__ == "__main__":
    sys.exit(main())
