"""The page in a real browser: Selenium driving Debian's headless chromium against a real
`owl serve` process. Upload an example, type "red circle", draw an exemplar box with the mouse,
move the threshold slider; read what the page drew from `window.owlState`.

Missing chromium or chromedriver is a failure with the reason, not a skip (.ci/run installs
them). With OWL_SCREENSHOT=docs/serve.png the first screenshot is also written there (the
README's picture).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IMAGES = Path(__file__).resolve().parents[2] / "examples/shapes/images"


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def browser():
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(binary) and os.access(binary, os.X_OK)):
            pytest.fail(
                f"{binary} is missing: the browser tests need Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; .ci/run does this)"
            )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1000,700")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 60.0):
    """Polls a JS expression until it is truthy (and no request is pending); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return owlState.pending === 0 && ({script})")
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script(
        "return {error: owlState.error, calls: owlState.calls, "
        "dets: owlState.images.map(im => im.detections)}"
    )
    raise AssertionError(f"timed out waiting for {script!r}; page state {state}")


def test_page_detects_draws_exemplars_and_rescores_live(browser, owl_server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    driver.get(owl_server.url + "/")
    wait_for(driver, "document.getElementById('model').textContent.includes('shapes-tiny')")

    # 1. Upload an example and type "red circle": a box where the red circle is.
    driver.find_element(By.ID, "files").send_keys(str(IMAGES / "000000.png"))
    wait_for(driver, "owlState.images.length === 1")
    driver.find_element(By.ID, "query").send_keys("red circle", Keys.ENTER)
    dets = wait_for(
        driver,
        "owlState.calls.rescore > 0 && "
        "owlState.images[0].detections.filter(d => d.label === 'red circle').length > 0 && "
        "owlState.images[0].detections",
    )
    best = max((d for d in dets if d["label"] == "red circle"), key=lambda d: d["score"])
    assert iou(best["box"], [81, 100, 105, 125]) > 0.6, best  # ground truth bbox [81, 100, 24, 25]
    shot = tmp_path / "red_circle.png"
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 1000
    # The canvas shows the box: a pixel on its top edge has the query's colour, not the image's.
    edge = driver.execute_script(
        "const im = owlState.images[0]; const d = arguments[0];"
        "const x = Math.round((d.box[0] + d.box[2]) / 2 * im.scale), y = Math.round(d.box[1] * im.scale);"
        "return Array.from(im.canvas.getContext('2d').getImageData(x, y, 1, 1).data);",
        best,
    )
    assert edge[:3] == [0xE6, 0x19, 0x4B], edge  # COLOURS[0] in app.js

    # 2. A second image; draw a box around its red star with the mouse: the star is found.
    driver.find_element(By.ID, "files").send_keys(str(IMAGES / "000001.png"))
    wait_for(driver, "owlState.images.length === 2")
    canvas = driver.find_elements(By.TAG_NAME, "canvas")[1]
    scale = driver.execute_script("return owlState.images[1].scale")
    width, height = canvas.size["width"], canvas.size["height"]

    def offset(x: float, y: float) -> tuple[int, int]:  # image pixels -> offset from the centre
        return round(x * scale - width / 2), round(y * scale - height / 2)

    star = [84, 12, 124, 46]  # red star, ground truth bbox [84, 12, 40, 34]
    ActionChains(driver).move_to_element_with_offset(canvas, *offset(star[0], star[1])) \
        .click_and_hold().move_to_element_with_offset(canvas, *offset(*star[2:])) \
        .release().perform()  # fmt: skip
    wait_for(driver, "owlState.exemplars.length === 1")
    drawn = driver.execute_script("return owlState.exemplars[0].box")
    assert iou(drawn, star) > 0.9, drawn
    found = wait_for(
        driver,
        "owlState.images[1].detections.filter(d => d.label === 'example').length > 0 && "
        "owlState.images[1].detections.filter(d => d.label === 'example')",
    )
    assert max(iou(d["box"], star) for d in found) > 0.6, found
    if os.environ.get("OWL_SCREENSHOT"):
        driver.save_screenshot(str(tmp_path / "page.png"))
        shutil.copyfile(tmp_path / "page.png", os.environ["OWL_SCREENSHOT"])

    # 3. Move the threshold slider with the keyboard: the boxes change, no new /v1/detect call.
    before = driver.execute_script(
        "return {detect: owlState.calls.detect, rescore: owlState.calls.rescore, "
        "n: owlState.images.reduce((n, im) => n + im.detections.length, 0)}"
    )
    assert before["detect"] == 2 and before["n"] > 0
    driver.find_element(By.ID, "threshold").send_keys(*[Keys.ARROW_RIGHT] * 60)  # 0.10 -> 0.70
    after = wait_for(
        driver,
        "owlState.threshold > 0.69 && "
        "{detect: owlState.calls.detect, rescore: owlState.calls.rescore, "
        "n: owlState.images.reduce((n, im) => n + im.detections.length, 0), "
        "low: owlState.images.flatMap(im => im.detections).filter(d => d.score < 0.7).length}",
    )
    assert after["detect"] == before["detect"]  # re-scored, never re-encoded
    assert after["rescore"] > before["rescore"]
    assert after["n"] < before["n"] and after["low"] == 0, (before, after)


def test_page_detects_and_tracks_in_a_short_video(browser, owl_server, tmp_path):
    """A video dropped on the page goes to /v1/detect-video with the current queries; the page
    plays the drawn video, names the boxes of the frame at the current time and offers the
    frames as tracks JSON."""
    import json
    import urllib.request

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from owl.data import shapes_video
    from owl.video.reader import probe

    spec = shapes_video.sample_video(3, num_frames=20, fps=10.0)
    video, _ = shapes_video.write_video(spec, tmp_path)
    name = spec.objects[0].name
    driver = browser
    driver.get(owl_server.url + "/")
    wait_for(driver, "document.getElementById('model').textContent.includes('shapes-tiny')")
    driver.find_element(By.ID, "query").send_keys(name, Keys.ENTER)
    driver.find_element(By.ID, "files").send_keys(str(video))
    body = wait_for(driver, "owlState.videos.length === 1 && owlState.videos[0]")
    assert body["video"] == "video.mp4" and body["frames_detected"] == 10  # 10 fps at 5 fps
    assert body["queries"] == [name] and body["tracks"] >= 1
    assert driver.execute_script("return owlState.images.length") == 0  # not sent as an image
    page = driver.execute_script(
        "const f = document.querySelector('#videos figure.video');"
        "return {src: f.querySelector('video').getAttribute('src'),"
        " download: f.querySelector('a').download, now: f.querySelector('output').textContent,"
        " json: f.querySelector('a').href.startsWith('blob:')}"
    )
    assert page["src"] == body["drawn"] == f"/v1/videos/{body['video_id']}"
    assert page["download"] == "video.tracks.json" and page["json"]
    first = body["frames"][0]
    assert page["now"].startswith(f"{first['timestamp']:.2f} s: ")
    if first["detections"]:
        top = first["detections"][0]
        assert f"{top['label']} {top['score']:.2f}" in page["now"]
    with urllib.request.urlopen(owl_server.url + body["drawn"], timeout=30) as r:
        assert r.headers["content-type"] == "video/mp4"
        (tmp_path / "drawn.mp4").write_bytes(r.read())
    drawn = probe(tmp_path / "drawn.mp4")
    assert (drawn.width, drawn.height, drawn.frames) == (128, 128, 10)
    assert json.loads(json.dumps(body["frames"]))[0]["video"] == "video.mp4"
