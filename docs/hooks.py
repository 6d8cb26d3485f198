"""MkDocs hook: regenerate the CLI reference (cli.md) from the argparse parser before every build."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gen_cli_docs.py"


def on_pre_build(config, **kwargs):
    spec = importlib.util.spec_from_file_location("gen_cli_docs", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_reference(Path(config["docs_dir"]) / "cli.md")
