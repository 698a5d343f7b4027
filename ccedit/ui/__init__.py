"""`ccedit ui`: the editing studio in a browser. `uploads.py` checks what a browser sends (`limits.py`: how much),
`studio.py` does the work on one loaded model and the work folder's job queue, `app.py` is the Gradio page."""


def serve(**options) -> None:
    """Start the studio and serve until interrupted (see `app.serve`); Gradio is imported only here."""
    from .app import serve as serve_app

    serve_app(**options)
