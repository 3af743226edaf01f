"""The docs cover the command: every option of every ``segpipe`` subcommand is in docs/options.md, and the README
stays a short page with exactly two set-up commands."""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OPTIONS = REPO / "docs" / "options.md"
README = REPO / "README.md"
README_MAX_LINES = 150
SETUP_COMMANDS = {"bash scripts/demo.sh", "bash scripts/test.sh"}


def _parser_factory() -> Callable[[], argparse.ArgumentParser]:
    """``_parser`` or ``build_parser`` from ``segpipe.cli`` (a module, or a package with a ``parser`` module)."""
    for module_name in ("segpipe.cli", "segpipe.cli.parser"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name in ("build_parser", "_parser"):
            factory = getattr(module, name, None)
            if callable(factory):
                return factory  # type: ignore[no-any-return]
    raise AssertionError("segpipe.cli exposes neither build_parser nor _parser")


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    """Every (sub)command as (its path, whether it is a leaf), the top-level parser first."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield path, not subparsers
    for action in subparsers:
        for name, child in action.choices.items():
            yield from _commands(child, (*path, name))


def _parser_at(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = _parser_factory()()
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [option for action in parser._actions for option in action.option_strings]


COMMANDS = list(_commands(_parser_factory()()))
OPTION_CASES = [(path, option) for path, _ in COMMANDS for option in _options(_parser_at(path))]
OPTION_IDS = [f"{' '.join(path) or 'segpipe'} {option}" for path, option in OPTION_CASES]


def _mentions(text: str, option: str) -> bool:
    """Whether ``option`` occurs as a whole option (``--truth`` does not count inside ``--truth-pattern``)."""
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_the_walker_finds_every_subcommand() -> None:
    leaves = {" ".join(path) for path, leaf in COMMANDS if leaf}
    assert {"run", "demo", "eval", "report", "model register", "runs show"} <= leaves


@pytest.mark.parametrize(("path", "option"), OPTION_CASES, ids=OPTION_IDS)
def test_every_option_is_in_options_md(path: tuple[str, ...], option: str) -> None:
    assert _mentions(OPTIONS.read_text(), option), f"segpipe {' '.join(path)} {option} is not in docs/options.md"


@pytest.mark.parametrize("path", [path for path, leaf in COMMANDS if leaf and path], ids=" ".join)
def test_every_subcommand_has_a_section(path: tuple[str, ...]) -> None:
    assert f"\n## segpipe {' '.join(path)}\n" in OPTIONS.read_text()


def _fenced_blocks(text: str) -> list[str]:
    """The contents of the README's fenced code blocks."""
    blocks: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append("\n".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_readme_has_exactly_the_two_setup_commands_fenced() -> None:
    setup = [block.strip() for block in _fenced_blocks(README.read_text()) if "bash scripts/" in block]
    assert sorted(setup) == sorted(SETUP_COMMANDS)


def test_an_option_counts_only_as_a_whole_word() -> None:
    assert not _mentions("`--truth-pattern P`", "--truth")
    assert _mentions("`--truth T`", "--truth")
