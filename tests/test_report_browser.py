"""The HTML report as a person opens it: rendered by headless Chromium, every image must load.

Needs Debian's ``chromium``; without it the test skips with the reason, and fails under CI=true (CI
installs it, so the check always runs there)."""

import json
import os
import re
import shutil
import subprocess

import pytest

from convtvm import report
from test_report import ARM_EMU, CUDA, X86, _write

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but no chromium: install Debian's chromium (.ci/run does)", pytrace=False)
    pytest.skip("no chromium on PATH (apt-get install chromium) to render the HTML report", allow_module_level=True)

# After load: the count of images that did not decode, and their alt texts, written into the DOM.
PROBE = ("<script>window.addEventListener('load', () => { const bad = [...document.images].filter("
         "i => !(i.complete && i.naturalWidth > 0)); document.body.setAttribute('data-images', "
         "JSON.stringify({total: document.images.length, broken: bad.map(i => i.alt)})); });</script>")


def _images_in_chromium(html_path, tmp_path) -> dict:
    probed = tmp_path / "probed.html"
    probed.write_text(html_path.read_text().replace("</body>", PROBE + "</body>"))
    out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"data-images=\"([^\"]*)\"", out.stdout)
    assert found, f"chromium gave no DOM (rc {out.returncode}): {out.stderr[-500:]}"
    return json.loads(found.group(1).replace("&quot;", '"'))


def test_every_image_of_the_report_loads_in_chromium(tmp_path):
    paths = [_write(tmp_path, n, d) for n, d in (("x86.json", X86), ("cuda.json", CUDA), ("arm.json", ARM_EMU))]
    html_path, _ = report.render_report(paths, tmp_path / "out")
    images = _images_in_chromium(html_path, tmp_path)
    assert images == {"total": 3, "broken": []}


def test_the_check_sees_a_broken_image(tmp_path):
    """The probe is no rubber stamp: a corrupted embedded PNG is reported by its caption."""
    html_path, _ = report.render_report([_write(tmp_path, "x86.json", X86)], tmp_path / "out")
    text = html_path.read_text()
    html_path.write_text(text.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAAA", 1))
    images = _images_in_chromium(html_path, tmp_path)
    assert images["total"] == 3 and len(images["broken"]) == 1
