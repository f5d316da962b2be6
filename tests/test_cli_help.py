"""Every command's --help shows how to type it: flags without a value, arguments as Click names them.

Typer 0.29's help printed `--json <bool>` (users then typed `--json true`, which fails: "unexpected
extra argument", or for predict "file not found: true") and usage lines like `predict {bundle}
{images}`; cnnkit/cli/app.py renders them plainly, whichever Typer is installed.
"""

from __future__ import annotations

import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from cnnkit.cli import app

runner = CliRunner()
GROUP = get_command(app)
COMMANDS = sorted(GROUP.commands)


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], prog_name="cnnkit")
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_listed_with_its_summary():
    text = help_of()
    assert "Usage: cnnkit [OPTIONS] COMMAND [ARGS]..." in text
    for name in COMMANDS:
        assert re.search(rf"│ {re.escape(name)} +\S", text), name
    assert "<bool>" not in text  # --debug is a flag


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_flags_without_a_value_and_arguments_in_capitals(name):
    command = GROUP.commands[name]
    text = help_of(name)
    assert "<bool>" not in text, text
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    usage = re.search(rf"Usage: cnnkit {name} \[OPTIONS\](.*)", text)[1].split()
    names = [a.metavar or a.name.upper() for a in arguments]
    assert usage == [(n if a.required else f"[{n}]") + ("..." if a.nargs != 1 else "") for n, a in zip(names, arguments)]
    for option in command.params:
        if option.param_type_name == "option" and option.help is None:
            pytest.fail(f"cnnkit {name} {option.opts[0]} has no help text")


def test_a_flag_given_a_value_is_a_usage_error_and_the_help_never_offered_one():
    # The flag takes no value, so "true" is taken as an argument: Click's usage error, exit 2.
    result = runner.invoke(app, ["inspect", "x.cnnkit", "--json", "true"])
    assert result.exit_code == 2
    assert re.search(r"--json +Print machine-readable JSON", help_of("inspect"))
