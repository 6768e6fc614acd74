"""The review page in headless chromium (the driver of tests/serve/test_browser.py) against a
real uvicorn server: open a scored COCO set (the low-score image comes first), relabel, delete
and draw with the keyboard and the mouse, reload (the unsaved edits come back from
localStorage), move a box with the mouse, save and read the file back with supervision; then a
second tab's stale save is refused (409) and the page says so. With
OWL_REVIEW_SCREENSHOT=docs/review.png the page, with the edits made, is also written there (the
README's picture)."""

from __future__ import annotations

import os
import shutil
import time
import warnings

from review_data import make_dataset, read_back
from serving import threaded_server
from test_browser import browser  # noqa: F401  (the chromium fixture)

from owl.serve.review import ReviewSession
from owl.serve.review_app import create_review_app

warnings.filterwarnings("ignore", message="OpenCV", category=UserWarning)
# examples/shapes/images 000000-000002 with their true boxes (examples/shapes/annotations.json),
# as a labeller might have left them: a hexagon with the wrong colour, a false "red square", the
# purple triangle missed (drawn in the test). b.png has the lowest score, so it comes first.
CLASSES = [
    "red circle",
    "purple hexagon",
    "blue hexagon",
    "purple triangle",
    "red square",
    "red star",
]
BOXES = {
    "a.png": [
        ([81, 100, 105, 125], "red circle", 0.92),
        ([4, 73, 49, 121], "blue hexagon", 0.31),
        ([30, 10, 60, 40], "red square", 0.45),
    ],
    "b.png": [([84, 12, 124, 46], "red star", 0.2)],
    "c.png": [([78, 20, 124, 61], "blue hexagon", 0.8)],
}
DRAWN = [82, 30, 101, 46]  # the purple triangle


def wait_for(driver, script: str, timeout: float = 30.0):
    """Polls a JS expression until it is truthy (and nothing is loading); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(
            f"return window.reviewState && reviewState.pending === 0 && ({script})"
        )
        if value:
            return value
        time.sleep(0.1)
    state = driver.execute_script(
        "return window.reviewState && {message: reviewState.message, index: reviewState.index, "
        "edits: reviewState.edits}"
    )
    raise AssertionError(f"timed out waiting for {script!r}; page state {state}")


def keys(driver, *pressed):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(driver)
    for k in pressed:
        chain.send_keys(k)
    chain.perform()


def current_boxes(driver) -> list:
    return driver.execute_script(
        "const im = reviewState.data.images[reviewState.index];"
        "const e = reviewState.edits[im.key]; return (e ? e.boxes : im.boxes)"
        ".map(b => [b.label, b.box, b.score]);"
    )


def test_review_page_edits_survive_a_reload_save_and_a_stale_tab_gets_409(browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver = browser
    path = make_dataset(tmp_path, "coco", BOXES, CLASSES)
    app = create_review_app(ReviewSession(path))
    with threaded_server(app) as port:
        url = f"http://127.0.0.1:{port}/"
        driver.get(url)
        driver.execute_script("localStorage.clear()")
        driver.get(url)
        # Low-confidence first: b.png (a box at 0.2) before a.png (lowest 0.3).
        wait_for(driver, "reviewState.data && reviewState.data.images.length === 3")
        names = driver.execute_script("return reviewState.data.images.map(im => im.name)")
        assert names == ["b.png", "a.png", "c.png"]
        canvas = driver.find_element(By.ID, "canvas")
        canvas.click()
        keys(driver, "n")  # to a.png
        wait_for(driver, "reviewState.index === 1")
        keys(driver, Keys.TAB)  # the lowest-scored box: the "blue hexagon" (0.31)
        assert wait_for(driver, "reviewState.selected") == "1"
        keys(driver, "2")  # relabel it "purple hexagon"
        keys(driver, Keys.TAB)  # now the lowest: the false "red square" (0.45)
        assert wait_for(driver, "reviewState.selected") == "2"
        keys(driver, Keys.DELETE, Keys.ESCAPE, "4")  # delete it; draw purple triangles
        wait_for(driver, "reviewState.drawClass === 3 && !reviewState.selected")

        scale = driver.execute_script("return reviewState.scale")
        width, height = canvas.size["width"], canvas.size["height"]

        def offset(x: float, y: float) -> tuple[int, int]:  # image pixels -> from the centre
            return round(x * scale - width / 2), round(y * scale - height / 2)

        ActionChains(driver).move_to_element_with_offset(canvas, *offset(*DRAWN[:2])) \
            .click_and_hold().move_to_element_with_offset(canvas, *offset(*DRAWN[2:])) \
            .release().perform()  # fmt: skip
        wait_for(driver, "Object.keys(reviewState.edits).length === 1")
        edited = sorted(current_boxes(driver))
        assert [(label, score) for label, _, score in edited] == [
            ("purple hexagon", 1), ("purple triangle", 1), ("red circle", 0.9200000166893005)
        ]  # fmt: skip
        drawn = next(box for label, box, _ in edited if label == "purple triangle")
        assert max(abs(a - b) for a, b in zip(drawn, DRAWN, strict=True)) < 1.0, drawn

        # A reload keeps the unsaved edits (localStorage).
        driver.refresh()
        wait_for(driver, "reviewState.data && reviewState.restored === 1")
        keys(driver, "n")
        wait_for(driver, "reviewState.index === 1")
        assert sorted(current_boxes(driver)) == edited
        if os.environ.get("OWL_REVIEW_SCREENSHOT"):
            driver.execute_script("reviewState.selected = '0'; render();")
            driver.save_screenshot(str(tmp_path / "review.png"))
            shutil.copyfile(tmp_path / "review.png", os.environ["OWL_REVIEW_SCREENSHOT"])

        # A second tab opens now, before the save: its versions are the old ones.
        first = driver.current_window_handle
        driver.switch_to.new_window("tab")
        driver.get(url)
        wait_for(driver, "reviewState.data && reviewState.restored === 1")
        driver.execute_script(  # this tab drops the restored edits: it starts from the file
            "for (const k of Object.keys(reviewState.edits)) { delete reviewState.edits[k]; }"
        )
        second = driver.current_window_handle

        driver.switch_to.window(first)
        # Move c.png's hexagon with the mouse: 8 px left, 8 px down.
        keys(driver, "n")
        wait_for(driver, "reviewState.index === 2")
        canvas = driver.find_element(By.ID, "canvas")
        ActionChains(driver).move_to_element_with_offset(canvas, *offset(101, 40)) \
            .click_and_hold().move_to_element_with_offset(canvas, *offset(93, 48)) \
            .release().perform()  # fmt: skip
        wait_for(driver, "Object.keys(reviewState.edits).length === 2")
        [(label, moved, score)] = current_boxes(driver)
        assert label == "blue hexagon" and score == 1
        assert max(abs(a - b) for a, b in zip(moved, [70, 28, 116, 69], strict=True)) < 1.0, moved
        keys(driver, "s")
        wait_for(driver, "reviewState.saves === 1 && Object.keys(reviewState.edits).length === 0")
        assert "saved 2 images" in driver.find_element(By.ID, "message").text
        expected = [
            ([4.0, 73.0, 49.0, 121.0], "purple hexagon"),
            ([81.0, 100.0, 105.0, 125.0], "red circle"),
        ]
        found = read_back(tmp_path, "coco")
        triangle = [b for b, label in found["a.png"] if label == "purple triangle"]
        assert [x for x in found["a.png"] if x[1] != "purple triangle"] == expected
        assert found["b.png"] == [([84.0, 12.0, 124.0, 46.0], "red star")]
        [(box, label)] = found["c.png"]
        assert (
            label == "blue hexagon"
            and max(abs(a - b) for a, b in zip(box, moved, strict=True)) < 1e-3
        )
        assert (
            len(triangle) == 1
            and max(abs(a - b) for a, b in zip(triangle[0], DRAWN, strict=True)) < 1.0
        )
        saved = path.read_bytes()

        # The stale tab deletes a box of a.png and saves: refused, the page says so, file kept.
        driver.switch_to.window(second)
        driver.find_element(By.ID, "canvas").click()
        keys(driver, "n", Keys.TAB, Keys.DELETE, "s")
        wait_for(driver, "reviewState.conflicts.length === 1")
        message = driver.find_element(By.ID, "message").text
        assert "saved by another tab or person" in message, message
        assert driver.find_element(By.ID, "conflict").is_displayed()
        assert path.read_bytes() == saved
        keys(driver, "t")  # take theirs: the page now shows the saved boxes, nothing unsaved
        wait_for(driver, "reviewState.conflicts.length === 0")
        assert len(current_boxes(driver)) == 3
        assert driver.execute_script("return Object.keys(reviewState.edits).length") == 0
        driver.close()
        driver.switch_to.window(first)
