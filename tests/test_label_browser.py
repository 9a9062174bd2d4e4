"""The real labeling page in headless Chromium (Debian's binary): keys, undo, escaping, the label file.

The screenshot is left in the test's tmp_path as label.png for a person to look at.
"""



from tether.label.pairs import load_items
from tether.label.server import serve_in_background
from tether.label.store import LabelStore
from tether.data.labels import effective_labels, read_label_rows


SCRIPT = "<script>window.__pwned = 1</script>"
IMG = '"><img src=x onerror="window.__pwned = 2">'
LONG = "\n".join(f"Step {i}: keep going, the answer is near." for i in range(1, 81))
PAIRS = [
    {"id": "xss", "prompt": f"Repeat after me: {SCRIPT}", "response_a": f"{SCRIPT}\n\n    indented   text",
     "response_b": IMG},
    {"id": "long", "prompt": "How do I shoot a great photo?", "response_a": LONG,
     "response_b": "Use soft light, fill the frame, and hold the camera steady."},
    {"id": "sum", "prompt": "What is 17 plus 25?", "response_a": "17 plus 25 is 42.",
     "response_b": "Great question! I love helping with arithmetic.\n\n17 plus 25 is 42.\n\nI hope this helps!"},
    {"id": "capital", "prompt": "What is the capital of France?", "response_a": "Paris.",
     "response_b": "idk lol just google it"},
]


def write_pairs(path):
    import json
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    return path


def test_label_three_pairs_with_the_keyboard_then_undo(tmp_path, browser):
    from playwright.sync_api import expect
    out = tmp_path / "labels.jsonl"
    store = LabelStore(load_items(write_pairs(tmp_path / "pairs.jsonl")), out, "alice", seed=0)
    problems = []
    with serve_in_background(store) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.goto(url)
        progress = page.locator("#progress-text")
        expect(progress).to_have_text("0 of 4")

        # Markup in a prompt or a response is shown as text, whitespace kept, and never runs.
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img").count() == 0 and page.locator("script").count() == 1
        assert page.locator("#prompt").text_content() == PAIRS[0]["prompt"]
        shown = sorted([page.locator("#left").text_content(), page.locator("#right").text_content()])
        assert shown == sorted([PAIRS[0]["response_a"], PAIRS[0]["response_b"]])
        assert "    indented   text" in page.locator("#left, #right").all_inner_texts()[0] + \
            page.locator("#left, #right").all_inner_texts()[1]

        page.keyboard.press("a")
        expect(progress).to_have_text("1 of 4")
        # The long response scrolls inside its box; a reason is typed, then Esc returns to the keys.
        assert page.locator("#prompt").text_content() == PAIRS[1]["prompt"]
        assert page.evaluate("Math.max(...['left', 'right'].map((id) => { const e = document.getElementById(id);"
                             " return e.scrollHeight - e.clientHeight; }))") > 0
        page.locator("#reason").click()
        page.keyboard.type("steps without an answer")
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        expect(progress).to_have_text("2 of 4")
        page.keyboard.press("t")
        expect(progress).to_have_text("3 of 4")
        page.keyboard.press("u")
        expect(progress).to_have_text("2 of 4")
        expect(page.locator("#status")).to_have_text("Undone: answer this pair again.")
        assert page.locator("#prompt").text_content() == PAIRS[2]["prompt"]
        page.screenshot(path=str(tmp_path / "label.png"), full_page=True)
        page.close()
    store.close()

    assert problems == []  # no script error, nothing blocked by the Content-Security-Policy
    rows = read_label_rows(out)
    assert [(r["event"], r["id"], r.get("choice")) for r in rows] == [
        ("label", "xss", "left"), ("label", "long", "right"), ("label", "sum", "tie"), ("undo", "sum", None)]
    assert rows[3]["undoes_time"] == rows[2]["time"]
    assert rows[1]["reason"] == "steps without an answer" and rows[0]["reason"] is None
    labels = effective_labels(rows)
    assert [r["id"] for r in labels] == ["xss", "long"]
    left_of_long = {"a": PAIRS[1]["response_a"], "b": PAIRS[1]["response_b"]}[rows[1]["order"][0]]
    assert rows[1]["rejected"] == left_of_long  # "right is better": the left response lost
