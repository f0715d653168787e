"""The front page and the documentation site: README.md stays a short front page whose links resolve,
the site builds offline with `mkdocs build --strict`, every recipe key and every CLI flag is documented,
the generated reference pages are current, and every `edgepipe`/`edgepipe-runner`/`make` command the
pages show exists, with flags its parser takes."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
README = REPO / "README.md"
README_LIMIT = 15_000


def pages() -> dict[Path, str]:
    """README.md and every page of docs/ (generated reference pages included)."""
    out = {README: README.read_text(encoding="utf-8")}
    out.update({p: p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md"))})
    return out


def section(text: str, heading: str) -> str:
    """The text under a markdown heading (its own line, e.g. '## edgepipe quantize'), up to the next one
    of its level."""
    level = heading.split(" ", 1)[0]
    lines = text.splitlines()
    start = lines.index(heading)
    end = next((i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{len(level)}}} ", lines[i])), len(lines))
    return "\n".join(lines[start:end])


# ------------------------------------------------------------------------------------------ README


def test_readme_is_a_short_front_page():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size:,} bytes; the front page stays within {README_LIMIT:,} (move detail to docs/)"
    )


def test_readme_relative_links_point_to_files():
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links, "README.md has no links into the docs"
    broken = [
        link
        for link in links
        if not re.match(r"[a-z][a-z0-9+.-]*:", link)
        and not link.startswith("#")
        and not (REPO / link.split("#", 1)[0]).exists()
    ]
    assert not broken, f"README.md links to files that do not exist: {broken}"


# ------------------------------------------------------------------------------------------ the site


def test_site_builds_offline_and_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs / mkdocs-material are not installed (the `docs` extra: pip install -e '.[docs]')")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    for page in (
        "index.html",
        "getting-started.html",
        "reference/recipes.html",
        "reference/cli.html",
        "report-desktop.png",
        "report-phone.png",
    ):
        assert (site / page).is_file(), f"the site lacks {page}"
    # nothing a page loads comes from elsewhere: no web fonts, no remote script or stylesheet
    remote = set()
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        remote |= set(re.findall(r"<(?:link|script|img)[^>]*(?:href|src)=\"(https?://[^\"]+)\"", text))
    remote = {u for u in remote if not u.startswith("https://squidfunk.github.io")}  # the theme's credit link
    assert not remote, f"pages load remote resources: {sorted(remote)}"


# ------------------------------------------------------------------------------------------ reference


def test_reference_pages_are_current(tmp_path):
    from edgepipe.pipeline.cli import docs_ref

    written = docs_ref.write(tmp_path)
    assert written
    stale = [
        p.name
        for p in written
        if (DOCS / "reference" / p.name).read_text(encoding="utf-8") != p.read_text(encoding="utf-8")
    ]
    assert not stale, (
        f"docs/reference/{', '.join(stale)} differ from the code; regenerate with "
        "`.venv/bin/python -m edgepipe.pipeline.cli.docs_ref` (or `make docs`) and commit them"
    )


def config_classes() -> dict[str, type]:
    """{where it is documented: dataclass} for the recipe's top level, data:, every stage and every nested mapping."""
    from edgepipe.pipeline.cli.docs_ref import project_stages
    from edgepipe.pipeline.core.dataspec import DataConfig
    from edgepipe.pipeline.core.recipe import _Top

    found = {"## Top level": _Top, "## data": DataConfig}
    found.update({f"### {kind}": d.config_cls for kind, d in project_stages().items()})
    queue = list(found.values())
    seen = set(queue)

    def walk(t):
        if dataclasses.is_dataclass(t) and isinstance(t, type):
            if t not in seen:
                seen.add(t)
                queue.append(t)
                found[t] = t
            return
        for arg in typing.get_args(t):
            walk(arg)

    while queue:
        cls = queue.pop(0)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            walk(hints[f.name])
    return found


def test_every_recipe_key_is_documented():
    ref = (DOCS / "reference" / "recipes.md").read_text(encoding="utf-8")
    missing = []
    for where, cls in config_classes().items():
        if isinstance(where, str):
            text = section(ref, where)
        else:
            heading = next((line for line in ref.splitlines() if line.startswith(f"### {cls.__name__}")), None)
            if heading is None:
                missing.append(f"{cls.__module__}.{cls.__name__} (no section)")
                continue
            text = section(ref, heading)
        missing += [
            f"{where if isinstance(where, str) else cls.__name__}: {f.name}"
            for f in dataclasses.fields(cls)
            if f"| `{f.name}` |" not in text
        ]
    assert not missing, f"recipe keys missing from docs/reference/recipes.md: {missing}"
    assert "stages" in section(ref, "## Top level")
    stage_page = (DOCS / "recipes.md").read_text(encoding="utf-8")
    from edgepipe.pipeline.cli.docs_ref import project_stages

    assert len(project_stages()) >= 10  # train … report, as pyproject's entry points name them
    assert not [k for k in project_stages() if f"`{k}`" not in stage_page], "a stage missing from docs/recipes.md"


def parsers() -> dict[str, argparse.ArgumentParser]:
    """{'edgepipe': …, 'edgepipe run': …, …, 'edgepipe-runner': …}: every command line there is."""
    from edgepipe.pipeline.cli.main import build_parser
    from edgepipe.runtime.args import build_parser as runner_parser

    top = build_parser()
    out = {"edgepipe": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update({f"edgepipe {name}": p for name, p in action.choices.items()})
    out["edgepipe-runner"] = runner_parser()
    return out


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if not isinstance(a, argparse._HelpAction) for o in a.option_strings}


def test_every_cli_flag_is_documented():
    ref = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    everything = "\n".join(pages().values())
    missing = []
    for cmd, parser in parsers().items():
        text = section(ref, f"## {cmd}")
        missing += [
            f"{cmd} {flag}"
            for flag in sorted(flags(parser))
            if flag.startswith("--") and (f"`{flag}`" not in text or flag not in everything)
        ]
    assert not missing, f"flags missing from docs/reference/cli.md: {missing}"


# ------------------------------------------------------------------------------------------ commands shown


def shown_commands(text: str) -> list[str]:
    """The edgepipe / edgepipe-runner / make command lines a page shows: in ```sh blocks (continuation lines
    joined, comments dropped) and in inline code that starts with one."""
    out = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", text, flags=re.S):
        current = None
        for line in block.splitlines():
            body = re.sub(r"(^|\s)#.*$", "", line).rstrip()
            stripped = body.lstrip().removeprefix("$ ")
            if re.match(r"(edgepipe|edgepipe-runner|make)(\s|$)", stripped):
                if current:
                    out.append(current)
                current = stripped.rstrip("\\")
            elif current is not None and (line[:1].isspace() or current.endswith("\\")) and stripped:
                current += " " + stripped.rstrip("\\")
            else:
                if current:
                    out.append(current)
                current = None
        if current:
            out.append(current)
    text_only = re.sub(r"```.*?```", "", text, flags=re.S)
    out += [
        span
        for span in re.findall(r"`([^`\n]+)`", text_only)
        if re.match(r"(edgepipe|edgepipe-runner|make) [a-z-]", span)
    ]
    return out


def test_commands_shown_exist():
    known = parsers()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (REPO / "Makefile").read_text(), flags=re.M))
    wrong = []
    for path, text in pages().items():
        if path.parent.name == "reference":
            continue
        for line in shown_commands(text):
            words = line.split()
            if words[0] == "make":
                wrong += [f"{path.name}: {line} (no target {words[1]})"] if words[1] not in targets else []
                continue
            cmd = words[0]
            if cmd == "edgepipe":
                sub = next((w for w in words[1:] if not w.startswith("-")), None)
                if f"edgepipe {sub}" not in known:
                    wrong.append(f"{path.name}: {line} (no subcommand {sub!r})")
                    continue
                cmd = f"edgepipe {sub}"
            allowed = flags(known[cmd]) | flags(known["edgepipe"]) | {"-h", "--help"}
            used = {m for m in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", line) if not re.match(r"-\d", m)}
            wrong += [f"{path.name}: {line} ({flag} is not a flag of {cmd})" for flag in sorted(used - allowed)]
    assert not wrong, "commands in README/docs that do not exist:\n" + "\n".join(wrong)
