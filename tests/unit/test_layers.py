"""The package layout is the architecture: `core/` never imports OctoPrint or Flask (it reaches OctoPrint
only through `core/port.PrinterPort`), and nothing in `core/` imports the adapter or the plugin module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "octoprint_safepause"
FORBIDDEN_IN_CORE = ("octoprint", "flask", "flask_babel", "flask_login", "werkzeug", "tornado")


def _imports(source: str) -> list[tuple[int, str]]:
    """(level, module) of every import in the source, wherever it stands (also inside functions)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def _absolute(path: Path, level: int, module: str) -> str:
    if level == 0:
        return module
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    base = parts[: len(parts) - level]
    return ".".join(base + ([module] if module else []))


def test_core_imports_nothing_from_octoprint_the_adapter_or_the_plugin():
    core_files = sorted((PACKAGE / "core").rglob("*.py"))
    assert len(core_files) > 15  # the walk really found the core
    offences = []
    for path in core_files:
        for level, module in _imports(path.read_text(encoding="utf-8")):
            name = _absolute(path, level, module)
            top = name.split(".")[0]
            if top in FORBIDDEN_IN_CORE:
                offences.append(f"{path.relative_to(PACKAGE)} imports {name}")
            elif top == "octoprint_safepause" and not name.startswith("octoprint_safepause.core"):
                offences.append(f"{path.relative_to(PACKAGE)} imports {name} (outside the core)")
    assert offences == []


def test_the_check_sees_imports_inside_functions_and_relative_ones_leaving_the_core():
    source = "def f():\n    import octoprint.plugin\n    from ..adapter import octoprint_port\n"
    assert _imports(source) == [(0, "octoprint.plugin"), (2, "adapter")]
    assert _absolute(PACKAGE / "core" / "x.py", 2, "adapter") == "octoprint_safepause.adapter"
