"""Real text present on every machine: the docstrings of the Python standard library, read from the
source files with `ast` (nothing is imported or executed)."""
from __future__ import annotations

import ast
import sysconfig
from dataclasses import dataclass
from pathlib import Path

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "ensurepip", "turtledemo",
              "__pycache__", "tkinter", "venv", "pydoc_data"}


@dataclass(frozen=True)
class Doc:
    id: str  # qualified name, e.g. "json.dumps"
    text: str  # the docstring, whitespace-normalized
    kind: str  # module | class | function
    module: str


def _walk(tree: ast.AST, module: str):
    doc = ast.get_docstring(tree, clean=True)
    if doc:
        yield Doc(module, doc, "module", module)
    stack = [(node, module) for node in getattr(tree, "body", [])]
    while stack:
        node, prefix = stack.pop(0)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name.startswith("_") and not node.name.startswith("__init"):
                continue
            qual = f"{prefix}.{node.name}"
            d = ast.get_docstring(node, clean=True)
            if d:
                yield Doc(qual, d, "class" if isinstance(node, ast.ClassDef) else "function", module)
            if isinstance(node, ast.ClassDef):
                stack.extend((child, qual) for child in node.body)


def stdlib_docstrings(min_chars: int = 40, max_docs: int | None = None, max_chars: int = 2000) -> list[Doc]:
    """Public module/class/function docstrings of the standard library, sorted by id (deterministic).
    Docstrings shorter than min_chars are dropped; longer than max_chars are cut at a paragraph."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs: dict[str, Doc] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS or part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for d in _walk(tree, module):
            text = d.text.strip()
            if len(text) > max_chars:
                text = text[:max_chars].rsplit("\n\n", 1)[0]
            text = " ".join(text.split())
            if len(text) >= min_chars and d.id not in docs:
                docs[d.id] = Doc(d.id, text, d.kind, d.module)
    out = [docs[k] for k in sorted(docs)]
    return out[:max_docs] if max_docs else out
