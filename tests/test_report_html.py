"""report.html: one self-contained file with the figures a user decides from, checked by a strict
HTML parser and, where Debian's Chromium is installed, rendered in a real browser."""

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import edgepipe, one_line_error

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402

URL_ATTRS = ("href", "src", "action", "poster", "srcset", "data", "formaction", "{http://www.w3.org/1999/xlink}href")
# the sections of the short recipe (train, distill, export, quantize, bench, report) that have data
EXPECTED = {"models": 1, "hops": 1, "latency": 1, "time": 1, "verdicts": 2, "deployment": 1}


def parse_strict(text: str):
    import html5lib

    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


def external_references(doc) -> list[str]:
    """Every attribute, stylesheet or script that would make the browser fetch something."""
    found = []
    for el in doc.iter():
        tag = el.tag if isinstance(el.tag, str) else ""
        local = tag.rsplit("}", 1)[-1]
        if local in ("script", "link", "iframe", "object", "embed", "base"):
            found.append(f"<{local}>")
        for k, v in el.attrib.items():
            if k in URL_ATTRS and not v.startswith("#") and not v.startswith("data:"):
                found.append(f"{local} {k}={v}")
            if k == "style" and ("url(" in v or "@import" in v):
                found.append(f"{local} style={v}")
        if local == "style" and el.text and ("url(" in el.text or "@import" in el.text):
            found.append("<style> with url() or @import")
    return found


def figures_by_section(doc) -> dict[str, int]:
    out: dict[str, int] = {}
    for fig in doc.iter("figure"):
        svgs = [e for e in fig.iter() if isinstance(e.tag, str) and e.tag.endswith("svg")]
        assert len(svgs) == 1, f"figure {fig.get('data-figure')} holds {len(svgs)} svg elements"
        out[fig.get("data-figure")] = out.get(fig.get("data-figure"), 0) + 1
    return out


def test_report_html_is_strict_self_contained_and_has_every_figure(short_run):
    run_dir, _ = short_run
    page = run_dir / "report" / "report.html"
    text = page.read_text()
    doc = parse_strict(text)  # raises on any parse error
    assert external_references(doc) == []
    assert figures_by_section(doc) == EXPECTED
    assert "<script" not in text.lower()
    # the figures say what they show, in text the DOM holds (svg.fonttype none)
    for words in (
        "accuracy against latency",
        "teacher → student → student.int8",
        "µs per inference (benchmark p50)",
        "% of the profile's budget",
        "energy per inference",
    ):
        assert words in text, words
    # the latency budget is drawn, from the profile the verdict used
    m = json.loads((run_dir / "manifest.json").read_text())
    v = m["stages"]["bench"]["metrics"]["models"]["student.int8.onnx"]["verdict"]
    limit = next(c["limit"] for c in v["checks"] if c["budget"] == "latency_p90_ms")
    assert f"p90 budget {limit:g} ms" in text


def test_markdown_verdicts_are_a_table(short_run):
    run_dir, _ = short_run
    md = (run_dir / "report" / "report.md").read_text()
    assert "| model | profile | verdict | latency p90 | peak RSS | bytes | energy / inference |" in md
    assert " against `" not in md  # the old verdict sentences are gone
    row = next(ln for ln in md.splitlines() if ln.startswith("| student.int8.onnx | `"))
    assert row.count(" / ") == 4


def test_bench_json_keeps_the_distribution_and_the_time_by_kind(short_run):
    run_dir, _ = short_run
    r = json.loads((run_dir / "bench" / "student.int8.bench.json").read_text())
    run = r["runs"][0]
    lat, h, ci = run["latency"], run["histogram"], run["latency_ci95_ms"]
    assert sum(h["counts"]) == lat["n"] and len(h["edges_ms"]) == len(h["counts"]) + 1
    assert h["edges_ms"][0] <= lat["min_ms"] and h["edges_ms"][-1] >= lat["max_ms"] * (1 - 1e-4)
    for q in ("p50", "p90", "p99"):
        assert ci[q][0] <= lat[f"{q}_ms"] <= ci[q][1]
    m = json.loads((run_dir / "manifest.json").read_text())
    x = m["stages"]["bench"]["metrics"]["models"]["student.int8.onnx"]["explain"]
    assert x["runs"] > 0 and x["ms_by_kind"].get("integer", 0) > 0  # an int8 model runs integer kernels
    fp = m["stages"]["bench"]["metrics"]["models"]["student.onnx"]["explain"]
    assert "integer" not in fp["ms_by_kind"] and fp["ms_by_kind"]["float compute"] > 0


def test_a_run_without_bench_renders_only_what_it_has(short_run):
    from edgepipe.pipeline.report.html import render

    run_dir, _ = short_run
    m = json.loads((run_dir / "manifest.json").read_text())
    del m["stages"]["bench"]
    doc = parse_strict(render(m, run_dir))
    assert figures_by_section(doc) == {"hops": 1, "deployment": 1}  # these need no bench


def test_report_command_writes_html(short_run, tmp_path):
    run_dir, _ = short_run
    out = tmp_path / "r.html"
    proc = edgepipe("report", run_dir, "--html", "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert figures_by_section(parse_strict(out.read_text())) == EXPECTED
    line = one_line_error(edgepipe("report", run_dir, "--html", "-o", tmp_path / "r.md"))
    assert "r.md" in line and ".html" in line and not (tmp_path / "r.md").exists()


needs_chromium = pytest.mark.skipif(
    browser.chromium() is None,
    reason="Debian's chromium is not installed (apt-get install chromium; `make test-browser` does)",
)


@needs_chromium
def test_the_net_log_check_sees_a_page_that_fetches(tmp_path):
    """The no-request check below can fail: a page with an external image and stylesheet is caught."""
    page = tmp_path / "fetches.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="https://fonts.example.com/f.css"></head>'
        '<body><img src="http://198.51.100.7/x.png" alt=""><p>x</p></body></html>'
    )
    log = tmp_path / "net.json"
    browser.screenshot(page, tmp_path / "f.png", 400, 300, netlog=log)
    assert sorted(browser.page_requests(log)) == ["http://198.51.100.7/x.png", "https://fonts.example.com/f.css"]


@needs_chromium
def test_report_renders_in_chromium_at_desktop_and_phone_width(short_run, tmp_path):
    run_dir, _ = short_run
    page = run_dir / "report" / "report.html"
    for name, (w, h) in {"desktop": (1280, 2400), "phone": (390, 2400)}.items():
        png, log = tmp_path / f"{name}.png", tmp_path / f"{name}.net.json"
        browser.screenshot(page, png, w, h, netlog=log)
        r = browser.rendered(png, (w, h))
        assert r["size"] == (w, h), r
        assert r["ink"] > 0.02 and r["std"] > 10, r  # not a blank page
        assert browser.page_requests(log) == []  # opening the report fetched nothing
    dom = browser.dom(page, width=390)
    assert len(re.findall(r"<figure class=\"figure\" data-figure=", dom)) == sum(EXPECTED.values())
    assert len(re.findall(r"<svg role=\"img\"", dom)) == sum(EXPECTED.values())
    for section in EXPECTED:
        assert f'id="{section}"' in dom


def test_sensitivity_figure_draws_each_group_from_the_prune_metrics():
    from edgepipe.pipeline.report.figures import sensitivity

    sens = {
        "baseline": {"accuracy": 0.98},
        "groups": [
            {"group": ["conv1"], "channels": 16, "accuracy": {"0.25": 0.97, "0.5": 0.9}},
            {"group": ["conv2", "bn2", "fc1"], "channels": 32, "accuracy": {"0.5": 0.96, "0.25": 0.979}},
        ],
    }
    svg = sensitivity(sens, "pruning sensitivity (prune)")
    assert svg.startswith("<svg") and "conv1 (16 ch)" in svg and "conv2, bn2 +1 (32 ch)" in svg
    parse_strict(f"<!DOCTYPE html><html><head><title>t</title></head><body>{svg}</body></html>")
    assert sensitivity({"baseline": {"accuracy": 0.9}, "groups": []}, "t") is None
