"""DESIGN.md's layering, checked by parsing the source with `ast`: nn/ and models/ hold pure torch code.
Their imports point down only (nn/ -> nn/; models/ -> models/, nn/; never encoder.py, checkpoints/, train/,
objectives/, processors/, ...), and they do no file, network or console I/O (no open(), print(), pathlib, os,
shutil, safetensors, torch.load / torch.save, tokenizers, hub downloads)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import encoderkit

SRC = Path(encoderkit.__file__).resolve().parent

# package -> the encoderkit packages its modules may import (its own layer and those below it)
ALLOWED = {"nn": ("nn",), "models": ("models", "nn")}

# third-party / stdlib modules that only serve I/O (files, network, tokenizing text, downloading)
IO_MODULES = {"os", "pathlib", "shutil", "io", "glob", "tempfile", "pickle", "shelve", "sqlite3", "socket", "http",
              "urllib", "requests", "httpx", "safetensors", "tokenizers", "huggingface_hub", "transformers", "PIL"}
IO_BUILTINS = {"open", "print", "input"}
IO_METHODS = {"read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "tofile", "save_pretrained",
              "from_pretrained", "save_file", "load_file", "safe_open"}
IO_FUNCTIONS = {("torch", "load"), ("torch", "save"), ("np", "load"), ("np", "save"), ("np", "savez"),
                ("np", "loadtxt"), ("np", "savetxt"), ("np", "fromfile"), ("numpy", "load"), ("numpy", "save")}

# (file, imported module) pairs tolerated for now, each with the reason; an entry that no longer matches fails.
TEMPORARY: dict[tuple[str, str], str] = {}


def _resolve(module: str | None, level: int, package: str) -> str:
    """Absolute name of an import target (relative imports resolved against `package`)."""
    if not level:
        return module or ""
    base = package.split(".")[: len(package.split(".")) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def violations(source: str, layer: str, package: str) -> list[tuple[int, str, str]]:
    """(line, imported module or "", message) for each rule `source` (a module of encoderkit.<layer>) breaks."""
    out: list[tuple[int, str, str]] = []
    allowed = ALLOWED[layer]

    def check_module(line: int, name: str) -> None:
        parts = name.split(".")
        if parts[0] == "encoderkit":
            if len(parts) < 2 or parts[1] not in allowed:
                out.append((line, name, f"imports {name}; {layer}/ may import only "
                                        f"{', '.join('encoderkit.' + a for a in allowed)}"))
        elif parts[0] in IO_MODULES:
            out.append((line, name, f"imports {name} (I/O has no place in {layer}/)"))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                check_module(node.lineno, a.name)
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module, node.level, package)
            if mod == "encoderkit":  # from encoderkit import nn, models, encoder...
                for a in node.names:
                    check_module(node.lineno, f"encoderkit.{a.name}")
            else:
                check_module(node.lineno, mod)
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in IO_BUILTINS:
                out.append((node.lineno, "", f"calls {f.id}()"))
            elif isinstance(f, ast.Name) and f.id == "__import__" or (
                    isinstance(f, ast.Attribute) and f.attr == "import_module"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    check_module(node.lineno, arg.value)
                else:
                    out.append((node.lineno, "", "imports a module by a computed name"))
            elif isinstance(f, ast.Attribute):
                if f.attr in IO_METHODS:
                    out.append((node.lineno, "", f"calls .{f.attr}()"))
                elif isinstance(f.value, ast.Name) and (f.value.id, f.attr) in IO_FUNCTIONS:
                    out.append((node.lineno, "", f"calls {f.value.id}.{f.attr}()"))
    return sorted(out)


def _files() -> list[tuple[str, Path]]:
    return [(layer, p) for layer in ALLOWED for p in sorted((SRC / layer).glob("*.py"))]


def test_the_checker_sees_the_files_and_catches_each_kind_of_violation():
    rel = {f"{layer}/{p.name}" for layer, p in _files()}
    assert {"nn/attention.py", "nn/pooling.py", "models/bert.py", "models/resnet.py", "models/dan.py"} <= rel
    bad = '''
import encoderkit.encoder
from encoderkit.checkpoints.hub import packaged_folder
from encoderkit import train
from ..objectives import contrastive
from . import bert
from encoderkit.nn import pool
import importlib, shutil
from pathlib import Path
from safetensors.torch import save_file
def f(m):
    importlib.import_module("encoderkit.train.run")
    open("x")
    print(m)
    Path("x").write_text("y")
    torch.save(m, "x")
    return torch.load("x")
'''
    got = violations(bad, "models", "encoderkit.models")
    msgs = [m for _, _, m in got]
    assert [line for line, _, _ in got] == [2, 3, 4, 5, 8, 9, 10, 12, 13, 14, 15, 16, 17], msgs
    assert {mod for _, mod, _ in got} >= {"encoderkit.encoder", "encoderkit.checkpoints.hub", "encoderkit.train",
                                          "encoderkit.objectives", "encoderkit.train.run", "shutil", "pathlib"}
    # nn/ is below models/: importing models from nn is upward
    assert [m for _, m, _ in violations("from encoderkit.models.vit import ViTConfig", "nn", "encoderkit.nn")] == \
        ["encoderkit.models.vit"]
    clean = "import math\nimport torch\nfrom torch import nn\nfrom encoderkit.nn.layers import FeedForward\n" \
            "def f(m):\n    return m.load_state_dict({})\n"
    assert violations(clean, "models", "encoderkit.models") == []


@pytest.mark.parametrize("layer,path", _files(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_nn_and_models_import_down_only_and_do_no_io(layer, path):
    rel = f"{layer}/{path.name}"
    found = violations(path.read_text(encoding="utf-8"), layer, f"encoderkit.{layer}")
    broken = [f"{rel}:{line}: {msg}" for line, mod, msg in found if (rel, mod) not in TEMPORARY]
    assert not broken, "\n".join(broken)


def test_temporary_exceptions_are_still_needed():
    found = {(f"{layer}/{p.name}", mod) for layer, p in _files()
             for _, mod, _ in violations(p.read_text(encoding="utf-8"), layer, f"encoderkit.{layer}")}
    stale = [f"{f} -> {m}" for f, m in TEMPORARY if (f, m) not in found]
    assert not stale, f"remove these entries from TEMPORARY in tests/test_layering.py: {stale}"
