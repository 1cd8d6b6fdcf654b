"""The container images, tested without a Docker engine: hadolint, then what a build and a start would need.

A small Dockerfile reader (instructions, stages, ARG defaults) checks that every COPY source exists and passes the
build-context filter, that the bases are pinned and match the ONNX Runtime build the server uses, that the final
stage runs as a non-root user without build tools, and that ENTRYPOINT + CMD is a command line the real `onnxplain`
CLI parses, with the ports the image exposes.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import pytest
from onnxruntime.capi import build_and_package_info

SERVER_IMAGES = ("Dockerfile", "Dockerfile.cpu")
ALL_IMAGES = (*SERVER_IMAGES, "Dockerfile.models")
BUILD_TOOLS = ("gcc", "g++", "clang", "make", "build-essential", "-dev", "pip", "python3-venv", "git", "curl", "wget")


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """The JSON array of ENTRYPOINT/CMD/HEALTHCHECK CMD; shell form fails (no signals reach the server)."""
        text = self.arguments.partition("CMD ")[2] if self.keyword == "HEALTHCHECK" else self.arguments
        value = json.loads(text)
        assert isinstance(value, list), f"{self.keyword} must be in exec form (a JSON array): {self.arguments}"
        return value

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags first, then the remaining words (COPY, FROM)."""
        words = shlex.split(self.arguments)
        flags = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [instruction for instruction in self.instructions if instruction.keyword == keyword]


@dataclass
class Dockerfile:
    arguments: dict[str, str]
    """ARG defaults declared before the first FROM (what FROM lines may use)."""
    stages: list[Stage]

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        text = re.sub(r"\\\n", " ", "\n".join(line for line in path.read_text().splitlines() if not _comment(line)))
        arguments: dict[str, str] = {}
        stages: list[Stage] = []
        for line in filter(None, (line.strip() for line in text.splitlines())):
            keyword, _, rest = line.partition(" ")
            instruction = Instruction(keyword.upper(), rest.strip())
            if instruction.keyword == "FROM":
                _, words = instruction.flags_and_words()
                base = re.sub(r"\$\{(\w+)\}", lambda match: arguments[match.group(1)], words[0])
                stages.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
            elif stages:
                stages[-1].instructions.append(instruction)
            elif instruction.keyword == "ARG":
                name, _, default = rest.partition("=")
                arguments[name] = default
        return cls(arguments, stages)

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage_argument(self, stage: Stage, name: str) -> str:
        [declared] = [instruction for instruction in stage.all("ARG") if instruction.arguments.startswith(name + "=")]
        return declared.arguments.partition("=")[2]


def _comment(line: str) -> bool:
    return line.lstrip().startswith("#")


class BuildContext:
    """The files `docker build` sends: the repository minus what the Dockerfile's .dockerignore leaves out
    (the last matching pattern decides; a pattern matching a parent folder matches everything below it)."""

    def __init__(self, root: Path, ignore_file: Path) -> None:
        self.root = root
        lines = (line.strip() for line in ignore_file.read_text().splitlines())
        self.patterns = [
            (line.startswith("!"), _glob_regex(line.lstrip("!").rstrip("/")))
            for line in lines
            if line and not line.startswith("#")
        ]

    def includes(self, relative: str) -> bool:
        parts = Path(relative).parts
        candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
        included = True
        for negated, pattern in self.patterns:
            if any(pattern.fullmatch(candidate) for candidate in candidates):
                included = negated
        return included and (self.root / relative).exists()


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's ignore globs: `**` any number of folders, `*` and `?` within one path element."""
    translated = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
    return re.compile(translated.replace(r"\*", "[^/]*").replace(r"\?", "[^/]"))


@pytest.fixture(scope="module", params=ALL_IMAGES)
def any_image(request, deploy_dir) -> Path:
    return deploy_dir / request.param


@pytest.fixture(scope="module", params=SERVER_IMAGES)
def server_image(request, deploy_dir, repository_root) -> tuple[Dockerfile, BuildContext]:
    path = deploy_dir / request.param
    return Dockerfile.read(path), BuildContext(repository_root, path.with_name(path.name + ".dockerignore"))


def test_hadolint_passes(any_image, deploy_dir, tool):
    command = [tool("hadolint"), "--no-color", "--config", str(deploy_dir / ".hadolint.yaml"), str(any_image)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_base_is_pinned_by_tag(any_image):
    for stage in Dockerfile.read(any_image).stages:
        if stage.base != "scratch":
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", stage.base), stage.base
            assert not stage.base.endswith(":latest"), stage.base


def test_every_copy_source_is_in_the_build_context(server_image):
    dockerfile, context = server_image
    stage_names = {stage.name for stage in dockerfile.stages}
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            flags, words = copy.flags_and_words()
            if "from" in flags:
                assert flags["from"] in stage_names, copy.arguments
                continue
            for source in words[:-1]:
                assert context.includes(source), f"COPY {source}: missing, or left out by the .dockerignore"


def test_the_context_holds_what_the_package_builds_read(server_image, repository_root):
    """`pip install /src/client /src/server` reads each pyproject.toml, its readme and its sources."""
    _, context = server_image
    for distribution in ("client", "server"):
        assert context.includes(f"{distribution}/pyproject.toml")
        assert context.includes(f"{distribution}/README.md")
        assert context.includes(f"{distribution}/src/onnxplain/{distribution}/__init__.py")
    assert context.includes("server/src/onnxplain/server/demo/repository/digits/1/model.onnx")
    # Left out: what no image needs (and what would change the context, and so the layer cache, for nothing).
    for unneeded in ("tests/conftest.py", "server/demo/train_digits.py", "README.md", "deploy/Dockerfile"):
        assert (repository_root / unneeded).exists()
        assert not context.includes(unneeded), unneeded


def test_both_images_filter_the_context_alike(deploy_dir):
    gpu, cpu = (deploy_dir / f"{name}.dockerignore" for name in SERVER_IMAGES)
    assert gpu.read_text() == cpu.read_text()


def test_the_final_stage_runs_as_a_non_root_user_without_build_tools(server_image):
    dockerfile, _ = server_image
    assert len(dockerfile.stages) >= 3, "models, builder and final stages"
    final = dockerfile.final
    [user] = final.all("USER")[-1:]
    uid = user.arguments.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, user.arguments
    for run in final.all("RUN"):
        installs = re.findall(r"apt-get install (.*?)(?:&&|$)", run.arguments)
        packages = " ".join(installs).split()
        assert not [package for package in packages if any(tool in package for tool in BUILD_TOOLS)], packages
    copied = [copy.flags_and_words() for copy in final.all("COPY") if "from" in copy.flags_and_words()[0]]
    assert {(flags["from"], tuple(words)) for flags, words in copied} == {
        ("builder", ("/opt/onnxplain", "/opt/onnxplain")),
        ("models", ("/", "/models")),
    }


def test_entrypoint_and_cmd_are_an_onnxplain_serve_command_line(server_image, onnxplain_cli):
    dockerfile, _ = server_image
    final = dockerfile.final
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    program, command, *arguments = entrypoint.exec_form() + cmd.exec_form()
    assert (program, command) == ("onnxplain", "serve")
    parsed = onnxplain_cli(command, arguments)
    assert parsed.model_repository == Path("/models")
    assert parsed.host == "0.0.0.0"
    exposed = {int(port) for expose in final.all("EXPOSE") for port in expose.arguments.split()}
    assert exposed == {parsed.port, parsed.metrics_port}


def test_healthcheck_runs_the_installed_health_probe(server_image, deploy_dir):
    dockerfile, _ = server_image
    final = dockerfile.final
    [healthcheck] = final.all("HEALTHCHECK")
    [program] = healthcheck.exec_form()
    destinations = {copy.flags_and_words()[1][-1]: copy.flags_and_words()[1][0] for copy in final.all("COPY")}
    assert destinations[f"/opt/onnxplain/bin/{program}"] == "deploy/healthcheck.py"
    assert "PATH=/opt/onnxplain/bin:$PATH" in " ".join(env.arguments for env in final.all("ENV"))


def test_the_gpu_base_has_the_cuda_major_onnxruntime_was_built_for(deploy_dir):
    base = Dockerfile.read(deploy_dir / "Dockerfile").final.base
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.\d+\.\d+-cudnn-runtime-ubuntu[\d.]+", base)
    assert match, f"a CUDA + cuDNN runtime image, not {base}"
    assert match.group(1) == build_and_package_info.cuda_version.split(".")[0]


def test_the_cpu_image_swaps_in_the_same_onnxruntime_version(deploy_dir):
    dockerfile = Dockerfile.read(deploy_dir / "Dockerfile.cpu")
    builder = next(stage for stage in dockerfile.stages if stage.name == "builder")
    assert dockerfile.stage_argument(builder, "ONNXRUNTIME_VERSION") == version("onnxruntime-gpu")
