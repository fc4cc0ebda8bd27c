"""Build ``plots/offline.html``: the HTML template ``dvc plots show`` and ``dvc plots diff``
use (``.dvc/config``: ``plots.html_template``), with Vega, Vega-Lite and vega-embed inlined
from ``plots/vendor/``, so the page draws its charts with no network.

DVC's own page loads the three libraries from a CDN and is blank offline (a secure research
environment). DVC fills a custom template's ``{plot_divs}`` with one ``<div>`` per plot, each
calling ``vegaEmbed(id, spec)``, and its ``{scripts}`` with the CDN ``<script>`` tags: this
template has no ``{scripts}``, so those tags are never added (dvc_render.html.HTML.embed).

Inlined, not loaded by relative path: DVC writes the page to ``dvc_plots/index.html`` under
the current directory (or ``-o DIR``), so a relative path to ``plots/vendor/`` would hold for
one output folder only, and the page is often copied out on its own; inlined, it is one
self-contained file (about 0.8 MB) that draws wherever it is opened.

A Content-Security-Policy lets the page load nothing from anywhere (scripts and styles inline
only; Vega compiles its expressions with ``Function``, hence 'unsafe-eval'; images only from
data:/blob: URIs and local files, for an image plot's ``static/`` PNG). vegaEmbed is wrapped
to draw SVG (sharp when zoomed or printed, and its marks are countable in the test) and to
drop the "Open in Vega Editor" action, which needs the network.

Run ``python plots/build_template.py`` after replacing a vendored file;
``tests/test_plots_offline.py`` checks that the committed template is this script's output.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
OUTPUT = HERE / "offline.html"
#: Loaded in this order: Vega-Lite needs Vega, vega-embed needs both.
LIBRARIES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js")
#: Text DVC replaces anywhere in the template, and text that would end or confuse an inline script.
FORBIDDEN = ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script", "<!--", "<script")

CSP = ("default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
       "img-src data: blob: file:")

WRAP_EMBED = """(function () {
  var embed = window.vegaEmbed;
  var offline = {renderer: "svg", actions: {export: true, source: true, compiled: true, editor: false}};
  window.vegaEmbed = Object.assign(function (el, spec, opt) {
    return embed(el, spec, Object.assign({}, offline, opt || {}));
  }, embed);
})();"""

HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
{{refresh_tag}}
<title>DVC plots (offline)</title>
<style>
  body {{ font-family: sans-serif; margin: 1em; }}
  table {{ border-spacing: 15px; }}
</style>
"""

TAIL = """</head>
<body>
{plot_divs}
</body>
</html>
"""


def build() -> str:
    """The template's text (deterministic: the same vendored files give the same bytes)."""
    parts = [HEAD.format(csp=CSP)]
    for name in LIBRARIES:
        code = (VENDOR / name).read_text(encoding="utf-8")
        bad = [text for text in FORBIDDEN if text in code.lower()]
        if bad:
            raise SystemExit(f"plots/vendor/{name}: contains {bad[0]!r}: cannot be inlined into the template")
        parts.append(f"<script>/* plots/vendor/{name} */\n{code}\n</script>\n")
    parts.append(f"<script>\n{WRAP_EMBED}\n</script>\n")
    parts.append(TAIL)
    return "".join(parts)


if __name__ == "__main__":
    OUTPUT.write_text(build(), encoding="utf-8")
    sys.stdout.write(f"{OUTPUT.relative_to(HERE.parent)}: {OUTPUT.stat().st_size:,} bytes\n")
