"""The import graph keeps the architecture of CONTRACTS.md: the declared layers, no cycle.

Every module of the package and every top-level script is parsed (ast, nothing is imported); each import of a
yolov3 module counts, whether at module level, inside a function or under ``if TYPE_CHECKING``, and so does
``importlib.import_module("yolov3.x")``.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import REPO_ROOT

LAYERS_BLOCK = re.compile(r"^```layers\n(.*?)^```", re.S | re.M)
LAYER_LINE = re.compile(r"^layer (\d+) +(\S+) +(.+)$")


def declared_order(contracts: str) -> dict:
    """{module: (layer, position on its line, layer name)} from the ```layers block of CONTRACTS.md."""
    match = LAYERS_BLOCK.search(contracts)
    assert match, "CONTRACTS.md: no ```layers block"
    order = {}
    for number, line in enumerate(match.group(1).strip().splitlines()):
        parsed = LAYER_LINE.match(line)
        assert parsed and int(parsed.group(1)) == number, f"CONTRACTS.md layers: cannot read line {line!r}"
        for position, module in enumerate(parsed.group(3).split()):
            assert module not in order, f"CONTRACTS.md layers: {module} is listed twice"
            order[module] = (number, position, parsed.group(2))
    return order


def project_sources(root: Path) -> dict:
    """{module name ('config', 'train', ...): source text} for yolov3/*.py and the top-level scripts."""
    files = [p for p in sorted((root / "yolov3").glob("*.py")) if p.name != "__init__.py"]
    files += sorted(root.glob("*.py"))
    return {path.stem: path.read_text(encoding="utf-8") for path in files}


def yolov3_imports(source: str, known: set) -> list:
    """[(imported module, line, 'module level' | 'in a function')] for every import of a yolov3 module."""
    tree = ast.parse(source)
    inside_functions = {id(node) for function in ast.walk(tree)
                        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                        for node in ast.walk(function) if node is not function}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "yolov3" if node.level else (node.module or "")
            if node.level and node.module:
                base = f"yolov3.{node.module}"
            names = [base] if base != "yolov3" else [f"yolov3.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and (
                    getattr(node.func, "attr", None) == "import_module" or getattr(node.func, "id", None) in
                    ("import_module", "__import__")):
            names = [node.args[0].value]
        for name in names:
            parts = name.split(".")
            if parts[0] == "yolov3" and len(parts) > 1 and parts[1] in known:
                found.append((parts[1], node.lineno, "in a function" if id(node) in inside_functions
                              else "module level"))
    return found


def import_graph(sources: dict) -> dict:
    return {module: yolov3_imports(text, set(sources)) for module, text in sources.items()}


def find_cycle(graph: dict):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> 'open' while on the DFS path, 'done' after

    def visit(module, path):
        state[module] = "open"
        for target, _, _ in graph.get(module, ()):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target, path + [target])
                if cycle:
                    return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [module])
            if cycle:
                return cycle
    return None


def layer_violations(graph: dict, order: dict) -> list:
    problems = []
    for module, imports in sorted(graph.items()):
        for target, line, where in imports:
            if order[target][:2] >= order[module][:2]:
                problems.append(f"{module} (layer {order[module][0]} {order[module][2]}) imports {target} "
                                f"(layer {order[target][0]} {order[target][2]}) at line {line}, {where}: the "
                                "layers allow only modules above, or to the left on the same line")
    return problems


SOURCES = project_sources(REPO_ROOT)
ORDER = declared_order((REPO_ROOT / "CONTRACTS.md").read_text(encoding="utf-8"))
GRAPH = import_graph(SOURCES)


def test_every_module_has_exactly_one_place_in_the_layers():
    assert sorted(SOURCES) == sorted(ORDER), (f"not in the CONTRACTS.md layers: {sorted(set(SOURCES) - set(ORDER))}; "
                                              f"declared but missing: {sorted(set(ORDER) - set(SOURCES))}")


def test_the_import_graph_has_no_cycle():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_import_follows_the_layers():
    assert layer_violations(GRAPH, ORDER) == []


def test_config_knows_no_module_but_files():
    assert [target for target, _, _ in GRAPH["config"]] == ["files"]


def test_the_checks_see_imports_inside_functions_and_dynamic_ones():
    """A planted cycle, hidden in a function the way the old code hid its cycles, is caught; so are the others."""
    planted = dict(SOURCES)
    planted["config"] += "\n\ndef validate_later(cfg):\n    from yolov3.loss import validate_loss_config\n"
    planted["utils"] += "\n\ndef errors():\n    return importlib.import_module('yolov3.checkpoint')\n"
    planted["weights"] += "\nif TYPE_CHECKING:\n    from .model import Darknet\n"
    graph = import_graph(planted)
    assert [(target, where) for target, _, where in graph["config"]] == [("files", "module level"),
                                                                            ("loss", "in a function")]
    assert find_cycle(graph) is not None
    problems = layer_violations(graph, ORDER)
    assert any(p.startswith("config (layer 1 foundations) imports loss (layer 4 pipelines)") and "in a function" in p
               for p in problems), problems
    assert any(p.startswith("utils (layer 2 helpers) imports checkpoint") for p in problems), problems
    assert any(p.startswith("weights (layer 2 helpers) imports model") and "module level" in p for p in problems)
    # to the left on its own line is allowed, to the right is not
    assert layer_violations({"evaluate": [("loss", 1, "module level")]}, ORDER) == []
    assert layer_violations({"loss": [("evaluate", 1, "module level")]}, ORDER) != []


# Files written other than through yolov3.files.atomic_write (a crash there can leave half a file), with the reason
# each may: appended logs, a lock, the archive code's own bounded writes, generated data a manifest vouches for
# (written last), and study report files and figures rebuilt from the records at any time.
DIRECT_WRITES = {
    ("ablation_runner.py", "open a"): 2,  # console.log of each run: appended
    ("runs.py", "open a"): 1,  # train.log: appended line by line
    ("archives.py", "open xb"): 1,  # an extracted entry, into a staging folder renamed when complete
    ("archives.py", "open wb"): 1,  # a download, into .part renamed when complete
    ("synthetic.py", "write_bytes"): 1,  # generated images: the manifest, written last, says when a set is whole
    ("synthetic.py", "write_text"): 1,  # generated labels: likewise
    ("synthetic.py", "open w"): 1,  # the generation lock file
    ("report.py", "write_text"): 1,  # summary.md: rebuilt from the committed records by --report-only
    ("report_tables.py", "open w"): 1,  # summary.csv: likewise
    ("plots.py", "savefig"): 1,  # figures: drawn again by any rerun
    ("report_plots.py", "savefig"): 1,  # into a buffer, then written atomically
}


def _direct_writes(path: Path) -> list:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in ("write_text", "write_bytes", "savefig"):
            found.append(func.attr)
        elif isinstance(func, ast.Name) and func.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "mode"), None)
            text = mode.value if isinstance(mode, ast.Constant) and isinstance(mode.value, str) else "r"
            if set(text) & set("wax+"):
                found.append(f"open {text}")
    return found


def test_every_other_file_is_written_through_atomic_write():
    counts: dict = {}
    for path in sorted((REPO_ROOT / "yolov3").glob("*.py")) + sorted(REPO_ROOT.glob("*.py")):
        if path.name == "files.py":  # atomic_write itself
            continue
        for kind in _direct_writes(path):
            counts[(path.name, kind)] = counts.get((path.name, kind), 0) + 1
    assert counts == DIRECT_WRITES


def test_the_layout_page_names_every_module_and_contracts_lists_every_results_column():
    from yolov3.runs import RESULT_COLUMNS

    layout = (REPO_ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    for path in sorted((REPO_ROOT / "yolov3").glob("*.py")):
        name = path.stem
        # written as `name.py`, or after its family's first module as `_rest` (`ablation_spec`, `_plan`, ...)
        shorthand = f"`_{name.split('_', 1)[1]}`" if "_" in name.strip("_") else None
        assert f"{name}.py" in layout or f"`{name}`" in layout or (shorthand and shorthand in layout), \
            f"docs/layout.md does not name yolov3/{path.name}"
    contracts = (REPO_ROOT / "CONTRACTS.md").read_text(encoding="utf-8")
    listed = re.search(r"`results\.csv`: one row per epoch, columns `([^`]*)`, then the epoch's\s+diagnostics `([^`]*)`",
                       contracts)
    assert listed, "CONTRACTS.md: the results.csv line is not where it was"
    columns = [c.strip() for part in listed.groups() for c in part.replace("\n", " ").split(",")]
    assert columns == list(RESULT_COLUMNS)
