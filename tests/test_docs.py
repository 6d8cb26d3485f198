"""The documentation follows the code: the CLI reference covers the parser, the README's links resolve,
and the MkDocs navigation names pages that exist. Needs only argparse and the repository's files."""
from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import pytest

from napari_cellseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"(!?)\[[^\]]*\]\(([^)\s]+)\)")


def _gen_cli_docs():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_cli_reference_covers_every_subcommand_and_option():
    parser = build_parser()
    subcommands = _subparsers(parser)
    assert len(subcommands) >= 5
    reference = _gen_cli_docs().render(parser)
    sections = re.split(r"^## ", reference, flags=re.M)[1:]
    by_name = {section.split("\n", 1)[0].removeprefix("napari-cellseg ").strip(): section for section in sections}
    assert set(by_name) == set(subcommands)
    for name, sub in subcommands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert f"`{flag}`" in by_name[name], f"{name}: {flag} missing from the CLI reference"
            if action.help:
                first_words = action.help.split()[0].replace("<", "&lt;").replace(">", "&gt;")
                assert first_words in by_name[name], f"{name}: help of {action.dest} missing"


def test_committed_cli_reference_names_every_subcommand():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in _subparsers(build_parser()):
        assert f"## napari-cellseg {name}\n" in committed, (
            f"docs/cli.md lacks {name!r}: run python scripts/gen_cli_docs.py")


def test_cli_reference_writer_leaves_an_up_to_date_file_alone(tmp_path):
    gen = _gen_cli_docs()
    out = tmp_path / "cli.md"
    assert gen.write_reference(out) is True
    assert gen.write_reference(out) is False
    assert gen.main(["--out", str(out), "--check"]) == 0
    out.write_text("stale\n", encoding="utf-8")
    assert gen.main(["--out", str(out), "--check"]) == 1


def _local_links(markdown: str):
    for bang, target in LINK.findall(markdown):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a web address or an anchor on the same page
        yield bool(bang), target.split("#", 1)[0]


def test_readme_links_resolve_to_files():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [target for is_image, target in _local_links(readme) if not is_image]
    assert any(target.startswith("docs/") for target in links), "the README links no page of docs/"
    missing = [target for target in links if not (ROOT / target).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_readme_images_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = [target for is_image, target in _local_links(readme) if is_image]
    missing = [target for target in images if not (ROOT / target).exists()]
    pending = [target for target in missing if target == "docs/images/segment.png"]
    assert missing == pending, f"README shows missing images: {missing}"
    if pending:
        pytest.skip("the screenshot is not produced yet: napari-cellseg demo --screenshot docs/images/segment.png")


def test_readme_keeps_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_test = ci[ci.index("# the README's test command:") + 1].strip()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ci_test == ".venv/bin/python -m pytest"
    assert re.search(r"^" + re.escape(ci_test) + r"\s*$", readme, flags=re.M), "README lost CI's test command"


def test_docs_links_and_navigation_resolve():
    yaml = pytest.importorskip("yaml")  # PyYAML comes with ultralytics; only this test needs it
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    docs = ROOT / config.get("docs_dir", "docs")

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    nav_pages = list(pages(config["nav"]))
    missing_nav = [page for page in nav_pages if not (docs / page).exists()]
    assert not missing_nav, f"mkdocs.yml's nav names missing pages: {missing_nav}"
    broken = []
    for page in docs.glob("*.md"):
        for is_image, target in _local_links(page.read_text(encoding="utf-8")):
            if target and not is_image and not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, f"broken links between docs pages: {broken}"


def _example_commands(markdown: str):
    """The napari-cellseg command lines of the ```bash blocks; synopses ([--option], a|b, ...) are left out."""
    for block in re.findall(r"```bash\n(.*?)```", markdown, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s+#", line)[0].strip()
            if line.startswith("napari-cellseg ") and not re.search(r"\[|\||\.\.\.", line):
                yield line


def test_example_commands_parse():
    import shlex

    parser = build_parser()
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    checked, failed = 0, []
    for page in pages:
        for line in _example_commands(page.read_text(encoding="utf-8")):
            try:
                parser.parse_args(shlex.split(line)[1:])
                checked += 1
            except SystemExit:
                failed.append(f"{page.name}: {line}")
    assert not failed, f"example commands the CLI rejects: {failed}"
    assert checked >= 10
