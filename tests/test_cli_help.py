"""Every flag of every command has help text, and its default where it has one; --help is instant."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from conftest import ROOT
from model.errors import ArgumentParser

COMMANDS = ["run_all_training", "aggregate_metrics", "model.train_entry", "model.generate",
            "model.evaluate_generation", "model.prepare_data", "model.demo_data", "model.plots",
            "model.benchmark", "model.facility"]
# each of these takes 0.5-6 s to import on a 2-core machine; --help must not wait for any of them
HEAVY = ("torch", "sklearn", "scipy", "statsmodels", "wandb", "submitit")
LOADED_BY_HELP = """
import contextlib, io, runpy, sys
heavy = sys.argv[2:]
sys.argv = [sys.argv[1], "--help"]
with contextlib.redirect_stdout(io.StringIO()):
    try:
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
print(" ".join(sorted(m for m in heavy if m in sys.modules)))
"""


class Built(Exception):
    def __init__(self, parser):
        self.parser = parser


@pytest.mark.parametrize("module", COMMANDS)
def test_every_flag_has_help_and_shows_its_default(module, monkeypatch):
    def capture(self, args=None, namespace=None):
        raise Built(self)

    monkeypatch.setattr(ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", [module])
    with pytest.raises(Built) as built:
        importlib.import_module(module).main()
    parser = built.value.parser
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0] if action.option_strings else action.dest
        assert action.help, f"{module} {flag} has no help"
        shown = formatter._get_help_string(action)
        if action.default is not None and not isinstance(action.default, bool):
            assert "default" in shown, f"{module} {flag} does not show its default {action.default!r}"


@pytest.mark.slow
@pytest.mark.parametrize("module", COMMANDS)
def test_help_loads_no_heavy_library(module):
    """What --help imports decides how long it takes: none of torch, scikit-learn, SciPy,
    statsmodels, wandb or submitit may load before the flags are read."""
    proc = subprocess.run([sys.executable, "-c", LOADED_BY_HELP, module, *HEAVY], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"{module} --help loads {proc.stdout.strip()}"
