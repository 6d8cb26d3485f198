"""The layers of docs/architecture.md: imports point one way (inside functions too), and no cycles."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_cellseg"
FAMILIES = ("yolo", "maskrcnn", "unet_student", "classifier", "classical")
# a module may import its own layer and the layers below it
RANK = {"core": 0, **{family: 1 for family in FAMILIES}, "backends": 2, "pipeline": 3}
TOP = 4  # cli, widgets, the napari contributions (_reader, _writer, _sample_data, _demo)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rank(module: str) -> int:
    return RANK.get(_layer(module), TOP)


def _module_of(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _imports(path: Path) -> set[str]:
    """Every napari_cellseg module ``path`` imports, at module level or inside functions."""
    module, is_package = _module_of(path)
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "napari_cellseg":
                continue
            for alias in node.names:  # "from . import x" may name a module
                candidate = f"{target}.{alias.name}"
                as_module = PACKAGE.parent / Path(*candidate.split("."))
                found.add(candidate if as_module.with_suffix(".py").is_file() or as_module.is_dir() else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("napari_cellseg")}
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_of(path)[0]: _imports(path) for path in PACKAGE.rglob("*.py")}


def test_imports_point_down_the_layers():
    upward = []
    for module, targets in _graph().items():
        for target in targets:
            if target == "napari_cellseg":
                continue  # the package's own __version__
            same_family = _layer(target) == _layer(module)
            if _rank(target) > _rank(module) or (_rank(module) == 1 and _rank(target) == 1 and not same_family):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the layers:\n" + "\n".join(sorted(upward))


def test_core_and_families_import_no_qt_or_napari():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module, _ = _module_of(path)
        if _rank(module) == TOP:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{module}: {n}" for n in names if n.split(".")[0] in ("napari", "qtpy", "PyQt5", "PyQt6",
                                                                                   "PySide2", "PySide6", "magicgui")]
    assert not offenders, offenders


def test_no_import_cycles():
    graph = _graph()
    modules = set(graph)
    cycles = []
    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for target in graph.get(node, ()):
            target = target if target in modules else ".".join(target.split(".")[:-1])
            if target not in modules or target == node:
                continue
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [module])
    # a package's __init__ re-exporting its submodules is not a cycle worth naming
    cycles = [c for c in cycles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not cycles, "\n".join(cycles)


def test_each_job_s_options_are_defined_once_and_reach_the_cli():
    """The CLI's flags, defaults and help of a job come from its options object in core/options.py."""
    from napari_cellseg.classifier.model import DEFAULT_CROP
    from napari_cellseg.classifier.train import DEFAULTS
    from napari_cellseg.cli import build_parser
    from napari_cellseg.core.options import (ClassifierTrainOptions, FinetuneOptions, SegmentOptions, option_fields,
                                             spec_of)

    assert DEFAULTS["crop_size"] == DEFAULT_CROP
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command, options in (("segment", SegmentOptions), ("finetune", FinetuneOptions),
                             ("train-classifier", ClassifierTrainOptions)):
        actions = {a.dest: a for a in sub[command]._actions}
        for f in option_fields(options):
            if not spec_of(f).cli:
                continue
            assert f.name in actions, (command, f.name)
            assert spec_of(f).help in actions[f.name].help, (command, f.name)
            if not isinstance(f.default, bool):
                assert actions[f.name].default == f.default, (command, f.name)


def test_every_import_of_the_package_names_a_module_that_exists():
    """Imports inside functions run late: a stale one (after a move) would fail only when that code runs."""
    missing = []
    for module, targets in _graph().items():
        for target in targets:
            path = PACKAGE.parent / Path(*target.split("."))
            if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                missing.append(f"{module} -> {target}")
    assert not missing, "\n".join(sorted(missing))


def test_the_cli_is_one_module_per_command():
    """Each subcommand's arguments and run function live in cli/<command>.py; cli/__init__ only assembles them."""
    from napari_cellseg.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name, parser in sub.items():
        func = parser.get_default("func")
        assert func.__module__ == f"napari_cellseg.cli.{name.replace('-', '_')}" and func.__name__ == "run", name
