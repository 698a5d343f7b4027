"""The studio in a real headless Chromium (Playwright driving the system browser): open a clip, pick frame 5,
edit it from the prompt, preview, run, find the video in the gallery; and bad input shown in the page.

README's picture of the studio, `assets/studio.png`, is this run's last stage; it is rewritten only on request:
`CCEDIT_UPDATE_SCREENSHOT=1 python -m pytest tests/ui/test_studio_browser.py -k gallery`.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket

import pytest

from tests.conftest import REPO, VIDEOS

pytest.importorskip("gradio")
playwright = pytest.importorskip("playwright.sync_api")

SCREENSHOT = REPO / "assets" / "studio.png"
UPLOAD_MB = 1  # `--max-upload-mb`: the sample clips are far smaller, a "huge" upload is 2 MB


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine: install it (apt-get install -y chromium) to test the studio")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from ccedit.ui.app import build_app, launch
    from ccedit.ui.studio import Studio

    browser_path = chromium()
    work = tmp_path_factory.mktemp("studio")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    studio = Studio(work / "work", "tiny", [VIDEOS], max_upload_mb=UPLOAD_MB).start()
    app = launch(build_app(studio), studio, "127.0.0.1", port)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        yield f"http://127.0.0.1:{port}", browser, studio, work
        browser.close()
    app.close()
    studio.stop()


def message(page) -> str:
    return page.locator("#message").inner_text()


def open_page(url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto(url)
    page.wait_for_selector("#open")
    for field, value in (("frames", 8), ("height", 64), ("width", 64), ("steps", 2)):
        page.locator(f"#{field} input").fill(str(value))
    return page


def wait_message(page, text: str, timeout: float = 120_000) -> None:
    page.locator("#message").filter(has_text=text).wait_for(timeout=timeout)


def keep_for_readme(page) -> None:
    """With CCEDIT_UPDATE_SCREENSHOT=1, the page as README shows it (`SCREENSHOT`): 640 pixels wide and reduced to
    a palette of 64 colours, so the repository's assets stay small."""
    if os.environ.get("CCEDIT_UPDATE_SCREENSHOT") != "1":
        return
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot = shot.resize((640, round(shot.height * 640 / shot.width)), Image.LANCZOS)
    shot.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(SCREENSHOT, optimize=True)


def test_open_pick_edit_preview_run_and_find_it_in_the_gallery(served, tmp_path):
    url, browser, studio, work = served
    page = open_page(url, browser)
    page.locator("#clip-upload input[type=file]").set_input_files(str(VIDEOS / "kitten.mp4"))
    page.locator("#open").click()
    wait_message(page, "opened: 8 frames at 64x64")
    assert page.locator("#strip img").count() == 8 and page.locator("#maps img").count() == 8
    assert [p.name for p in (work / "work" / "inputs").iterdir()][0].endswith(".mp4")  # stored by content hash
    page.screenshot(path=tmp_path / "1-opened.png", full_page=True)

    page.locator("#strip img").nth(5).click()
    page.wait_for_function("document.querySelector('#index input').value === '5'")
    page.locator("#prompt textarea").fill("a dog")
    page.locator("#auto").click()
    wait_message(page, "frame 5 edited from the prompt")
    page.screenshot(path=tmp_path / "2-keyframe.png", full_page=True)

    page.locator("#preview").click()
    wait_message(page, "preview ready")
    assert page.locator("#preview-video video").count() == 1
    page.screenshot(path=tmp_path / "3-preview.png", full_page=True)

    page.locator("#run").click()
    page.locator("#status").filter(has_text="done: studio-").wait_for(timeout=180_000)
    page.locator("#result video").wait_for(timeout=30_000)
    assert "ccedit edit" in page.locator("#command textarea").input_value()
    assert "@5" in page.locator("#command textarea").input_value()
    page.screenshot(path=tmp_path / "4-gallery.png", full_page=True)
    keep_for_readme(page)
    [job] = studio.finished()
    assert job.spec.keyframes[0].endswith("@5") and (work / "work" / "outputs" / job.spec.output).is_file()


def test_bad_input_is_a_message_in_the_page_and_nothing_is_written(served, tmp_path):
    url, browser, studio, work = served
    page = open_page(url, browser)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    page.locator("#clip-upload input[type=file]").set_input_files(str(text))
    page.locator("#open").click()
    wait_message(page, "the uploaded clip is not a readable video")
    page.locator("#clip-upload button[aria-label='Clear']").first.click()
    page.locator("#clip-path input, #clip-path textarea").first.fill("/etc/passwd")
    page.locator("#open").click()
    wait_message(page, "is outside the allowed folders")

    page.locator("#clip-path input, #clip-path textarea").first.fill(str(VIDEOS / "kitten.mp4"))
    page.locator("#open").click()
    wait_message(page, "opened: 8 frames")
    wrong = tmp_path / "wrong.png"
    from PIL import Image

    Image.new("RGB", (50, 30)).save(wrong)
    page.locator("#key-upload input[type=file]").set_input_files(str(wrong))
    wait_message(page, "the keyframe image is 50x30 but the frames are 64x64")
    stored = sorted(p.name for p in (work / "work" / "inputs").iterdir())
    assert not any(name.endswith(".png") and "wrong" in name for name in stored)
    assert all(len(name.split(".")[0]) == 64 for name in stored)  # names are content hashes, never upload names
    page.screenshot(path=tmp_path / "bad-input.png", full_page=True)


def test_an_upload_over_the_limit_is_refused_in_the_page_and_the_server_keeps_serving(served, tmp_path):
    import httpx

    url, browser, studio, work = served
    huge = tmp_path / "huge.mp4"
    huge.write_bytes(os.urandom(2 * UPLOAD_MB << 20))
    page = open_page(url, browser)
    page.locator("#clip-upload input[type=file]").set_input_files(str(huge))
    page.get_by_text(f"exceed the maximum allowed size of {UPLOAD_MB:.1f} Mb").wait_for(timeout=30_000)
    page.locator("#open").click()
    wait_message(page, f"give a clip: upload one (up to {UPLOAD_MB} MB)")
    # A client that skips the page's check is refused by the server itself.
    with huge.open("rb") as f:
        posted = httpx.post(f"{url}/gradio_api/upload", files={"files": ("huge.mp4", f, "video/mp4")}, timeout=60)
    assert posted.status_code == 413
    # The server keeps serving: the next action works.
    page.locator("#clip-upload input[type=file]").set_input_files(str(VIDEOS / "kitten.mp4"))
    page.locator("#open").click()
    wait_message(page, "opened: 8 frames")
    digest = hashlib.sha256(huge.read_bytes()).hexdigest()
    stored = [p for p in (work / "work").rglob("*") if p.is_file()]
    assert not any(p.stat().st_size >= huge.stat().st_size or digest in p.name for p in stored)
