"""The README matches the tool (issue 22, item 7): its command table lists exactly the CLI's
commands, each example parses, every option it names is an option of the CLI and every option of
the CLI is named, the --dtype choices and the environment variables the code reads are all
documented, and its picture is what the command in its caption draws today."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from flowprof.cli.command import commands
from flowprof.cli.main import build_parser, command_parser
from flowprof.cli.options import DTYPES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def _command_rows() -> dict[str, str]:
    """The README's command table: command -> its example."""
    rows = re.findall(r"^\| `([\w-]+)` \| `([^`]+)` \|", _section("Commands"), flags=re.M)
    return dict(rows)


def _options() -> set[str]:
    found: set[str] = set()
    for command in commands():
        found |= set(command_parser(command.name)._option_string_actions)
    return found


def test_the_command_table_lists_every_command_and_only_those() -> None:
    assert set(_command_rows()) == {c.name for c in commands()}


def test_every_example_in_the_table_parses() -> None:
    parser = build_parser()
    for name, example in _command_rows().items():
        words = example.split()
        assert words[:3] == ["python", "cli.py", name], example
        args = parser.parse_args(words[2:])  # a bad option raises (exit 2)
        assert args.command == name


def test_every_option_named_is_the_clis_and_every_option_is_named() -> None:
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    assert named - _options() == set()  # nothing the CLI does not have
    assert _options() - named - {"-h"} == set()  # nothing the CLI has left out


def test_dtype_choices_and_environment_variables_are_documented() -> None:
    documented = re.search(r"`--dtype\s+([\w|]+)`", README)
    assert documented is not None
    assert documented.group(1).split("|") == list(DTYPES)
    read = set()
    for path in (ROOT / "flowprof").rglob("*.py"):
        read |= set(re.findall(r"environ(?:\.get\(|\[)\"(FLOWPROF_\w+)\"", path.read_text()))
    assert read >= {"FLOWPROF_DATA", "FLOWPROF_CACHE", "FLOWPROF_DEBUG"}
    assert {v for v in read if f"`{v}" not in README} == set()


def _names_and_labels(svg: str) -> set[str]:
    return set(re.findall(r"<title>([^<]*)</title>", svg)) | set(
        re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    )


@pytest.mark.dot
def test_the_readme_picture_is_what_its_command_draws_today() -> None:
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "docs" / "regenerate.py")
    regenerate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regenerate)
    for picture, (argv, _) in regenerate.PICTURES.items():
        assert f"]({picture})" in README
        assert f"`python cli.py {' '.join(argv)}`" in README  # the caption names the command
        committed = (ROOT / picture).read_text()
        today = regenerate.draw(picture).decode()
        assert _names_and_labels(committed) == _names_and_labels(today), (
            f"{picture} is stale: run `make docs`"
        )
