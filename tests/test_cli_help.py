"""Every flag of every command has help text, and its default where it has one."""
from __future__ import annotations

import argparse
import importlib
import sys

import pytest

from model.errors import ArgumentParser

COMMANDS = ["run_all_training", "aggregate_metrics", "model.train_entry", "model.generate",
            "model.evaluate_generation", "model.prepare_data", "model.demo_data", "model.plots",
            "model.benchmark", "model.facility"]


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
