"""Every script's --help: each flag has a help sentence and states its default (or that it is required)."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# script -> how to reach its parser with ["--help"]: the function that parses
SCRIPTS = {  # modules by name (python -m NAME for the library's), files by path
    "train_sft": "parse_args",
    "train_grpo": "parse_args",
    "eval": "parse_args",
    "tools/bench.py": "parse_args",
    "tools/demo.py": "parse_args",
    "geovlm.plot": "main",
    "geovlm.viewer": "main",
    "geovlm.formats": "main",
    "geovlm.baselines": "main",
    "embedded.synth": "main",
    "scripts/ablate.py": "main",
    "scripts/eight_ranks.py": "main",
    "scripts/reward_throughput.py": "main",
    "scripts/grpo_proof.py": "parse_args",
    "scripts/pretrain_tiny.py": "parse_args",
    "scripts/perception_start.py": "main",
    "scripts/box_counts.py": "main",
    "scripts/headroom.py": "main",
    "scripts/box_errors.py": "main",
    "scripts/true_answer_sft.py": "parse_args",
}


def _module(script: str, monkeypatch):
    if not script.endswith(".py"):
        return importlib.import_module(script)
    spec = importlib.util.spec_from_file_location(f"help_{Path(script).stem}", ROOT / script)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up while it executes
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_documents_every_flag_and_its_default(script, monkeypatch, capsys):
    parsers: list[argparse.ArgumentParser] = []
    real = argparse.ArgumentParser.parse_args

    def recording(self, args=None, namespace=None):
        parsers.append(self)
        return real(self, args, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", recording)
    with pytest.raises(SystemExit) as e:
        getattr(_module(script, monkeypatch), SCRIPTS[script])(["--help"])
    assert e.value.code == 0 and parsers, script
    text = capsys.readouterr().out
    parser = parsers[0]
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue  # -h itself; internal flags hidden from --help
        flag = action.option_strings[-1] if action.option_strings else action.dest
        shown = formatter._expand_help(action) if action.help else ""
        if len(shown.split()) < 3:
            missing.append(f"{flag}: no help sentence")
        elif action.option_strings and "default" not in shown.lower() and not action.required:
            missing.append(f"{flag}: no default stated ({shown!r})")
        elif action.option_strings and action.required and "required" not in shown.lower():
            missing.append(f"{flag}: required, and the help does not say so")
        if action.option_strings:
            assert flag in text, flag
    assert not missing, f"{script}: " + "; ".join(missing)
