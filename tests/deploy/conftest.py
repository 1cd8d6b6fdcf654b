"""Fixtures of the deployment tests: the repository's deploy/ folder, the `onnxplain` CLI's parser, and the
command-line tools (kubectl, hadolint) the test group installs as wheels.

(Fixtures only: with --import-mode=importlib, test modules cannot import from a conftest.)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from onnxplain.client.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repository_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def deploy_dir() -> Path:
    return ROOT / "deploy"


@pytest.fixture(scope="session")
def onnxplain_cli() -> Callable[[str, Sequence[str]], argparse.Namespace]:
    """`onnxplain COMMAND ARGUMENTS` parsed by the real CLI parser: an unknown flag or a bad value fails the test
    instead of exiting."""
    parser = build_parser()

    def parse(command: str, arguments: Sequence[str]) -> argparse.Namespace:
        try:
            parsed = parser.parse_args([command, *arguments])
        except SystemExit:
            pytest.fail(f"`onnxplain {command} {' '.join(arguments)}` does not parse (see the usage message above)")
        assert parsed.command == command
        return parsed

    return parse


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    """A command installed by the test group's wheels: beside this Python first (`make test` does not activate the
    venv), then on PATH."""

    def find(name: str) -> str:
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.exists() else shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is missing: install the test group (`make install`)")
        return found

    return find
