"""`ccedit ui`: the studio's page, on Gradio.

Gradio is what diffusion models' demos are built on (diffusers' and the Hugging Face Spaces' examples): users know
its upload boxes and galleries, and it gives a request queue with progress bars, file size limits and a server
that only serves the files the app hands out. The page only calls `Studio`; every check lives there or in
`uploads.py`, and a refused input is one line in the page's message box while the server keeps serving.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from ..errors import UserError, first_line
from .studio import OpenClip, Studio, edit_settings

logger = logging.getLogger(__name__)
VIDEO_HEIGHT = 320  # pixels on the page


def _guarded(message):
    """Page actions whose refusal (or failure) becomes the one line shown in `message`; nothing else changes and
    the server keeps serving."""
    import gradio as gr

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except UserError as error:
                line = f"error: {error}"
            except Exception as error:  # noqa: BLE001 - the log has the traceback
                logger.exception("studio action failed")
                line = f"error: {type(error).__name__}: {first_line(error)}"
            return {message: gr.update(value=line)}

        return run

    return wrap


# long: one Gradio page: its layout and the handlers that close over its components, read top to bottom
def build_app(studio: Studio):
    import gradio as gr

    with gr.Blocks(title="ccedit studio") as app:
        gr.Markdown("# ccedit studio\nOpen a clip, pick and edit a keyframe, preview, then run the whole edit.")
        clip_state = gr.State(None)
        keyframe_state = gr.State(None)
        job_state = gr.State(None)
        message = gr.Markdown("", elem_id="message")
        guarded = _guarded(message)
        with gr.Row():
            upload = gr.File(label=f"clip (upload, up to {studio.max_upload_mb:g} MB)", type="filepath",
                             elem_id="clip-upload")
            path = gr.Textbox(label="or a path inside an allowed folder", elem_id="clip-path")
        with gr.Row():
            frames = gr.Number(16, label="frames", precision=0, elem_id="frames")
            height = gr.Number(128, label="height", precision=0, elem_id="height")
            width = gr.Number(128, label="width", precision=0, elem_id="width")
            steps = gr.Number(4, label="steps", precision=0, elem_id="steps")
            seed = gr.Number(0, label="seed", precision=0, elem_id="seed")
        open_button = gr.Button("Open clip", elem_id="open")
        strip = gr.Gallery(label="frames (click one to pick it)", columns=8, height=160, elem_id="strip")
        maps = gr.Gallery(label="structure maps", columns=8, height=160, elem_id="maps")
        prompt = gr.Textbox(label="prompt", elem_id="prompt")
        with gr.Row():
            index = gr.Number(0, label="keyframe frame", precision=0, elem_id="index")
            strength = gr.Slider(0.05, 1.0, value=0.75, label="keyframe edit strength", elem_id="strength")
            key_seed = gr.Number(0, label="keyframe seed", precision=0, elem_id="key-seed")
        with gr.Row():
            key_upload = gr.File(label="edited keyframe (upload)", type="filepath", elem_id="key-upload")
            key_auto = gr.Button("Edit keyframe from the prompt", elem_id="auto")
            keyframe = gr.Image(label="keyframe", interactive=False, elem_id="keyframe")
        with gr.Row():
            preview_button = gr.Button("Preview", elem_id="preview")
            run_button = gr.Button("Run", variant="primary", elem_id="run")
            cancel_button = gr.Button("Cancel", elem_id="cancel")
        # Videos and settings at a fixed height: a small clip is not blown up to the page's width.
        preview = gr.Video(label="preview (first window, half size and steps)", height=VIDEO_HEIGHT,
                           elem_id="preview-video")
        status = gr.Markdown("", elem_id="status")
        gr.Markdown("## Finished edits")
        refresh = gr.Button("Refresh", elem_id="refresh")
        finished = gr.Dropdown([], label="finished job", elem_id="finished")
        result = gr.Video(label="source | structure | keyframe | result", height=VIDEO_HEIGHT, elem_id="result")
        sidecar = gr.Code(label="settings (sidecar)", language="json", max_lines=16, elem_id="sidecar")
        command = gr.Textbox(label="the same edit from the command line", elem_id="command")

        @guarded
        def open_clip(file, text, n, h, w, s, sd):
            clip = studio.open_clip(file, text, edit_settings(n, h, w, s, sd))
            first = clip.maps[0] if clip.maps else []
            return {clip_state: clip, keyframe_state: None, keyframe: None, strip: list(clip.frames),
                    maps: list(first), message: f"opened: {clip.frames.shape[0]} frames at "
                    f"{clip.frames.shape[2]}x{clip.frames.shape[1]}"}

        def pick(evt: gr.SelectData):
            return evt.index

        pick.__annotations__["evt"] = gr.SelectData  # Gradio finds the event by its type, not by a postponed name

        @guarded
        def uploaded_keyframe(clip: OpenClip | None, file):
            if file is None:
                return {message: ""}
            path, image = studio.upload_keyframe(_need(clip), file)
            return {keyframe_state: str(path), keyframe: image, message: "keyframe uploaded"}

        @guarded
        def auto(clip: OpenClip | None, text, k, st, sd):
            path, image = studio.auto_keyframe(_need(clip), k, text, sd, st)
            return {keyframe_state: str(path), keyframe: image, message: f"frame {int(k)} edited from the prompt"}

        @guarded
        def make_preview(clip: OpenClip | None, text, key, k):
            video = studio.preview(_need(clip), text, Path(key) if key else None, k)
            return {preview: str(video), message: "preview ready"}

        @guarded
        def submit(clip: OpenClip | None, text, key, k):
            key_id = studio.submit(_need(clip), text, Path(key) if key else None, k)
            return {job_state: key_id, message: "queued"}

        @guarded
        def run(key_id, progress=gr.Progress()):
            if not key_id:
                return {}
            job = studio.wait(key_id, lambda fraction, what: progress(fraction, desc=what))
            choices = _choices(studio)
            if job.state != "done":
                return {job_state: key_id, message: f"error: the edit {job.state}: {job.error}",
                        finished: gr.update(choices=choices)}
            return {job_state: key_id, status: f"done: {job.spec.output}", message: "",
                    finished: gr.update(choices=choices, value=job.id)}

        @guarded
        def cancel(key_id):
            if key_id:
                studio.cancel(key_id)
            return {message: "cancelling" if key_id else "no edit is running"}

        @guarded
        def show(job_key):
            job = studio.queue.get(job_key) if job_key else None
            if job is None or job.state != "done":
                return {result: None, sidecar: "", command: ""}
            video = job.outputs.get("side_by_side") or job.outputs["video"]
            record = json.loads(Path(job.outputs["sidecar"]).read_text())
            return {result: video, sidecar: json.dumps(record.get("config", {}), indent=2),
                    command: studio.command_line(job)}

        everything = [clip_state, keyframe_state, job_state, keyframe, strip, maps, message, preview, status, finished,
                      result, sidecar, command]
        open_button.click(open_clip, [upload, path, frames, height, width, steps, seed], everything)
        strip.select(pick, None, index)
        key_upload.change(uploaded_keyframe, [clip_state, key_upload], everything)
        key_auto.click(auto, [clip_state, prompt, index, strength, key_seed], everything)
        preview_button.click(make_preview, [clip_state, prompt, keyframe_state, index], everything)
        # Queued first, so Cancel knows the job while the wait shows its progress.
        run_button.click(lambda: None, None, job_state).then(
            submit, [clip_state, prompt, keyframe_state, index], everything).then(run, [job_state], everything)
        cancel_button.click(cancel, [job_state], everything, concurrency_limit=None)
        refresh.click(lambda: gr.update(choices=_choices(studio)), None, finished, concurrency_limit=None)
        finished.change(show, [finished], everything, concurrency_limit=None)
        app.load(lambda: gr.update(choices=_choices(studio)), None, finished)
    return app


def _need(clip: OpenClip | None) -> OpenClip:
    if clip is None:
        raise UserError("open a clip first")
    return clip


def _choices(studio: Studio) -> list[tuple[str, str]]:
    return [(f"{job.spec.output}: {job.spec.prompt}", job.id) for job in reversed(studio.finished())]


def serve(*, model: str | None, host: str, port: int, work: str | Path, allowed: list[str],
          max_upload_mb: float) -> None:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the studio needs Gradio: pip install 'ccedit[ui]'") from None
    studio = Studio(work, model, allowed, max_upload_mb).start()
    app = build_app(studio)
    try:
        launch(app, studio, host, port).block_thread()
    finally:
        studio.stop()


def launch(app, studio: Studio, host: str, port: int):
    """Start serving without blocking; only the work folder's files are ever handed to the browser."""
    app.queue(default_concurrency_limit=1)  # one model: requests wait their turn
    app.launch(server_name=host, server_port=port, prevent_thread_lock=True, allowed_paths=[str(studio.work)],
               max_file_size=studio.max_upload_bytes, show_error=False, quiet=True)
    return app
