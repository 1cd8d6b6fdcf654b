"""Every code block of README.md runs as written, so the README cannot drift from the code (issue #21).

The blocks run in their order, as a reader pasting them would, from a copy of the repository root (links to the
folders they read, `.venv` to this Python's environment) so that what they write (`out/`, `audit/`, `labels.csv`)
lands in a temporary folder. The server is the embedded demo that `make serve` runs, started on a free port: the
blocks keep the `localhost:50051` a reader sees, and the test swaps in the real port (the text of Python and
JavaScript blocks, `$ONNXPLAIN_SERVER` for the CLI's default). Python blocks run in their own process each (one
process cannot hold both tritonclient's and the server's `inference.*` protos), shell blocks in bash with the
environment's `bin` first on PATH, and a JavaScript block is the file its first line names (`// client.js`), which a
later shell block runs. A YAML block is a model config, read by the server's config reader; JSON must parse; `text`
blocks are listings and transcripts, shown, not run.

A block that cannot run here (it sets the machine up, or serves until stopped) carries `<!-- not run: why -->` on
the line before it; such blocks stay few, and each says why.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from support.servers import RunningServer, running

from onnxplain.server.demo import REPOSITORY
from onnxplain.server.repository.config import read_model_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
# What the blocks read from the repository root; anything else they need makes them fail here, not silently pass.
READ_FROM_ROOT = ("client", "server", "proto", "tests")
DEMO_ADDRESS = "localhost:50051"
ANY_ADDRESS = re.compile(r"(?:localhost|127\.0\.0\.1|0\.0\.0\.0):\d+")
NOT_RUN = re.compile(r"^<!-- not run: (?P<reason>.+) -->$")
FENCE = re.compile(r"^```(?P<language>\S*)\s*$")
JS_FILE = re.compile(r"^// (?P<name>[\w.-]+\.js)$")
MAX_NOT_RUN = 4
RUN = ("python", "sh", "js")
CHECKED = ("yaml", "json")
LITERAL = ("text",)
# A ceiling for one block on a busy machine (the audit is the longest); never a measure of speed.
BLOCK_TIMEOUT_S = 240


@dataclass(frozen=True)
class Block:
    line: int
    """Of the opening fence, 1-based."""
    language: str
    text: str
    not_run: str | None
    """The marker's reason, when the line before the fence is `<!-- not run: ... -->`."""

    @property
    def name(self) -> str:
        return f"L{self.line}-{self.language or 'untagged'}"


def read_blocks(markdown: str) -> tuple[list[Block], int]:
    """The fenced blocks in order, and how many not-run markers the text holds (each must precede a block)."""
    lines = markdown.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        marker = NOT_RUN.match(lines[index - 1]) if index else None
        text = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(index + 1, fence["language"], text, marker["reason"] if marker else None))
        index = end + 1
    return blocks, sum(1 for line in lines if line.startswith("<!-- not run"))


BLOCKS, MARKERS = read_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [block for block in BLOCKS if block.language in RUN and block.not_run is None]
# JavaScript blocks are files that a later shell block runs; the rest run themselves.
COMMANDS = [block for block in RUNNABLE if block.language != "js"]


def javascript_file(block: Block) -> str | None:
    """The file a JavaScript block's first line names (`// client.js`)."""
    header = JS_FILE.match(block.text.splitlines()[0])
    return header["name"] if header else None


def run_block(block: Block, sandbox: Path, address: str) -> subprocess.CompletedProcess[str]:
    """Run a Python or shell block in the sandbox against the server at `address`."""
    text = block.text.replace(DEMO_ADDRESS, address)
    if block.language == "python":
        script = sandbox.parent / f"readme-{block.name}.py"
        script.write_text(text)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-eu", "-o", "pipefail", "-c", text]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("ONNXPLAIN_")}
    environment["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{environment.get('PATH', '')}"
    environment["ONNXPLAIN_SERVER"] = address
    return subprocess.run(
        command, cwd=sandbox, env=environment, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, check=False
    )


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository root as the blocks see it: its folders, and `.venv` the environment running these tests."""
    root = tmp_path_factory.mktemp("readme") / "onnxplain"
    root.mkdir()
    for name in READ_FROM_ROOT:
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    (root / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def readme_server() -> Iterator[RunningServer]:
    """`make serve`'s server (the embedded demo) on a free port; its own, since a block reloads the model."""
    with running(REPOSITORY) as server:
        yield server


@pytest.fixture(scope="module")
def outcomes(sandbox: Path, readme_server: RunningServer) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every Python and shell block's outcome, run in the README's order with the JavaScript files saved on the way
    (later blocks use what earlier ones wrote)."""
    address = f"localhost:{readme_server.port}"
    results = {}
    for block in RUNNABLE:
        if block.language == "js":
            (sandbox / javascript_file(block)).write_text(block.text.replace(DEMO_ADDRESS, address))
        else:
            results[block.name] = run_block(block, sandbox, address)
    return results


def test_every_block_is_runnable_checked_or_literal() -> None:
    unknown = [block.name for block in BLOCKS if block.language not in RUN + CHECKED + LITERAL]
    assert not unknown, f"tag these blocks with one of {RUN + CHECKED + LITERAL}: {unknown}"


def test_few_blocks_are_not_run_and_each_says_why() -> None:
    not_run = [block for block in BLOCKS if block.not_run is not None]
    assert len(not_run) == MARKERS, "a `<!-- not run: reason -->` marker must sit on the line just before a block"
    assert len(not_run) <= MAX_NOT_RUN, [block.name for block in not_run]
    for block in not_run:
        assert len(block.not_run.split()) >= 4, f"{block.name}: say why it cannot run, not just that"


def test_runnable_blocks_call_only_the_demo_address() -> None:
    """The test swaps DEMO_ADDRESS for the real one: a block naming any other would call something else."""
    others = {block.name: ANY_ADDRESS.findall(block.text.replace(DEMO_ADDRESS, "")) for block in RUNNABLE}
    assert not {name: found for name, found in others.items() if found}


def test_every_javascript_file_is_run_by_a_later_block() -> None:
    for index, block in enumerate(RUNNABLE):
        if block.language != "js":
            continue
        name = javascript_file(block)
        assert name, f"{block.name}: start with `// NAME.js`, the file a reader saves it as"
        later = [other.text for other in RUNNABLE[index + 1 :] if other.language == "sh"]
        assert any(re.search(rf"\bnode\b.*\b{re.escape(name)}\b", text) for text in later), block.name


@pytest.mark.parametrize("block", COMMANDS, ids=lambda block: block.name)
def test_block_runs(
    block: Block, outcomes: dict[str, subprocess.CompletedProcess[str]], readme_server: RunningServer
) -> None:
    result = outcomes[block.name]
    output = result.stdout + result.stderr
    # An INTERNAL error's cause is only in the server's log, under the request id its message gives.
    request_ids = re.findall(r"request id (\w+)", output)
    causes = "".join(line for line in readme_server.output if any(rid in line for rid in request_ids))
    assert result.returncode == 0, f"README.md line {block.line}:\n{block.text}\n{output}\n{causes}"


@pytest.mark.parametrize(
    "block", [block for block in BLOCKS if block.language in CHECKED], ids=lambda block: block.name
)
def test_block_is_valid(block: Block, tmp_path: Path) -> None:
    if block.language == "json":
        json.loads(block.text)
        return
    # A model config: the server's reader accepts every key and value shown (labels_file names a file beside it).
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.yaml").write_text(block.text)
    (model / "labels.txt").write_text("cat\ndog\n")
    read_model_config(model)


@pytest.mark.usefixtures("outcomes")
def test_cli_example_writes_the_files_it_names(sandbox: Path) -> None:
    """The set-up section's `onnxplain explain` promises a 28x28 float32 map and an overlay in out/."""
    occlusion = np.load(sandbox / "out" / "digit_6_strokes.occlusion.npy")
    assert (occlusion.shape, occlusion.dtype) == ((28, 28), np.float32)
    assert (sandbox / "out" / "digit_6_strokes.occlusion.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.usefixtures("outcomes")
def test_audit_example_audits_every_image(sandbox: Path) -> None:
    """`onnxplain audit` exits 0 even when it skipped images (a server error on one image skips it), so its journal
    says whether the README's audit did its work."""
    records = [json.loads(line) for line in (sandbox / "audit" / "results.jsonl").read_text().splitlines()]
    assert records
    assert [record for record in records if record["status"] != "ok"] == []
    assert (sandbox / "audit" / "report.html").is_file()
