"""The headless-browser check (tests/browser.py) itself, on two small pages.

Skipped, not failed, where Chromium is not installed (``apt-get install chromium``);
the helper needs nothing from PyPI.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.browser import find_chromium, inspect_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium")

# A 1x1 red PNG.
PNG_1x1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")

ERROR_SECTION = """
<section id="how-often-wrong">
  <h2>How often this model is wrong</h2>
  <p id="natural-frequencies">Of every 100 children flagged, 38 are not re-referred
     (false positives); of every 100 re-referred, 21 were not flagged (false negatives).</p>
  <table id="error-table">
    <tr><th></th><th>per 100</th></tr>
    <tr><td>False positives</td><td>38</td></tr>
    <tr><td>False negatives</td><td>21</td></tr>
  </table>
</section>
"""

GOOD = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Good report</title>
<style>body {{ font-family: sans-serif; }} table {{ border-collapse: collapse; }}</style>
</head><body>{ERROR_SECTION}
<svg width="200" height="100" xmlns="http://www.w3.org/2000/svg"><rect width="200" height="100" fill="#ccc"/>
  <text x="10" y="50">calibration</text></svg>
<img alt="figure" src="data:image/png;base64,{PNG_1x1}" width="100" height="100">
<div style="height: 2000px"></div>
<p>Far below the first screen.</p>
</body></html>
"""

BAD = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bad report</title>
<link rel="stylesheet" href="other.css">
</head><body>
<img src="https://example.org/x.png" alt="remote">
<div style="height: 3000px">A tall figure</div>
{ERROR_SECTION}
</body></html>
"""


def _no_process_names(marker: str) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read():
                        return False
            except OSError:
                pass
    return True


def _inspect(path: Path) -> dict:
    started = time.monotonic()
    result = inspect_report(path)
    assert time.monotonic() - started < 30
    # Nothing left behind: no process names the temporary profile, which is gone.
    assert _no_process_names(result["user_data_dir"])
    assert not Path(result["user_data_dir"]).exists()
    return result


def test_find_chromium_is_an_executable():
    assert os.access(CHROMIUM, os.X_OK)


def test_good_report_is_self_contained_and_leads_with_errors(tmp_path):
    report = tmp_path / "report.html"
    report.write_text(GOOD, encoding="utf-8")
    result = _inspect(report)
    assert result["requests"] == [], result["requests"]
    assert result["title"] == "Good report"
    assert result["error_table_in_first_screen"] is True
    assert "How often this model is wrong" in result["first_screen_text"]
    assert "False negatives" in result["first_screen_text"]
    assert "Far below the first screen" not in result["first_screen_text"]
    assert result["first_body_element"] == "section#how-often-wrong"
    assert result["natural_frequencies_text"].startswith("Of every 100 children flagged")
    assert result["viewport"] == {"width": 1280, "height": 800}


def test_bad_report_requests_are_caught_and_table_is_below_the_fold(tmp_path):
    report = tmp_path / "report.html"
    report.write_text(BAD, encoding="utf-8")
    (tmp_path / "other.css").write_text("body { color: #333; }", encoding="utf-8")
    result = _inspect(report)
    assert "https://example.org/x.png" in result["requests"]
    assert (tmp_path / "other.css").as_uri() in result["requests"]
    assert report.as_uri() not in result["requests"]
    assert result["error_table_in_first_screen"] is False
    assert result["error_table_box"]["top"] > 3000
    assert "How often this model is wrong" not in result["first_screen_text"]
    assert result["first_body_element"] == "img"


def test_requests_of_every_kind_are_caught(tmp_path):
    """Fonts, scripts, fetch/XHR, iframes, workers, late and lazy-loaded images."""
    report = tmp_path / "report.html"
    report.write_text("""<!doctype html><html><head><title>k</title>
<style>@font-face { font-family: F; src: url(https://fonts.example.org/f.woff2); } p { font-family: F; }</style>
<script src="https://cdn.example.org/lib.js"></script></head><body><p>text</p>
<iframe src="frame.html"></iframe>
<div style="height: 3000px"></div><img loading="lazy" src="https://example.org/lazy.png">
<script>
fetch("https://api.example.org/fetch").catch(() => {});
const x = new XMLHttpRequest(); x.open("GET", "http://api.example.org/xhr"); x.send();
new Worker(URL.createObjectURL(new Blob(['fetch("https://api.example.org/worker").catch(() => {})'])));
setTimeout(() => { new Image().src = "https://example.org/late.gif"; }, 200);
</script></body></html>""", encoding="utf-8")
    (tmp_path / "frame.html").write_text('<img src="https://example.org/in-frame.png">', encoding="utf-8")
    result = _inspect(report)
    expected = {
        "https://fonts.example.org/f.woff2", "https://cdn.example.org/lib.js",
        (tmp_path / "frame.html").as_uri(), "https://example.org/in-frame.png",
        "https://example.org/lazy.png", "https://api.example.org/fetch",
        "http://api.example.org/xhr", "https://api.example.org/worker",
        "https://example.org/late.gif",
    }
    assert expected <= set(result["requests"]), expected - set(result["requests"])
    # Network requests are blocked after being recorded: the check never goes online.
    assert set(result["blocked"]) == expected - {(tmp_path / "frame.html").as_uri()}


def test_missing_error_table_is_not_in_first_screen(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<!doctype html><title>t</title><p>No table here.</p>", encoding="utf-8")
    result = _inspect(report)
    assert result["error_table_in_first_screen"] is False
    assert result["error_table_box"] is None
    assert result["first_screen_text"] == "No table here."
