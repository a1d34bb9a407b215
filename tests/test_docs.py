"""The README and the guides: every link and anchor resolves, every command they show is one the
command line accepts, and the parameter reference is the one the code generates."""
import functools
import os
import re
import shlex
import subprocess
import sys
import unicodedata

import pytest

from tests.conftest import REPO_ROOT

PAGES = ["README.md", "CHANGELOG.md",
         *sorted(f"docs/{name}" for name in os.listdir(os.path.join(REPO_ROOT, "docs")) if name.endswith(".md"))]
FENCE = re.compile(r"^\s*(```|~~~)\s*(\w*)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FLAG = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}


def read(page: str) -> str:
    with open(os.path.join(REPO_ROOT, page), encoding="utf-8") as file:
        return file.read()


def split_fences(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(the lines outside fenced code blocks, [(language, body)] of the blocks)."""
    prose, blocks, block, language = [], [], None, ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if fence and block is None:
            block, language = [], fence.group(2)
        elif fence:
            blocks.append((language, "\n".join(block)))
            block = None
        elif block is not None:
            block.append(line)
        else:
            prose.append(line)
    return prose, blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(character for character in text if character in " -"
                   or unicodedata.category(character)[0] in "LMN" or unicodedata.category(character) == "Pc")
    return kept.replace(" ", "-")


@functools.cache
def anchors(page: str) -> set[str]:
    found, seen = set(), {}
    for line in split_fences(read(page))[0]:
        if heading := HEADING.match(line):
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: str) -> list[str]:
    prose = "\n".join(split_fences(read(page))[0])
    return LINK.findall(INLINE_CODE.sub("code", prose))


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:: the web is not checked here
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if resolved.startswith("..") or not os.path.exists(os.path.join(REPO_ROOT, resolved)):
            broken.append(f"{target}: no file {resolved}")
        elif anchor and (not resolved.endswith(".md") or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading of {resolved} has the anchor #{anchor}")
    assert not broken, f"{page} has broken links:\n" + "\n".join(broken)


def commands(page: str) -> list[list[str]]:
    """Every command line of the page's bash and sh blocks, as words, its environment
    assignments left out; one entry per command of a `&&` chain."""
    found = []
    for language, body in split_fences(read(page))[1]:
        if language not in ("bash", "sh"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words, command = shlex.split(line, comments=True), []
            for word in [*words, ";"]:
                if word not in SHELL_SEPARATORS:
                    command.append(word)
                    continue
                while command and re.match(r"^[A-Z_]+=", command[0]):
                    command.pop(0)
                if command:
                    found.append(command)
                command = []
    return found


def project_program(command: list[str]) -> tuple[list[str], list[str]] | None:
    """(what prints the help that covers the command, the command's own arguments), or None for a
    command that is not this project's (pip, pytest, the virtual environment, tensorboard, ...)."""
    program, *args = command
    if program == "luigi" and args[:2] == ["--module", "pipeline"] and len(args) > 2:
        return ["-m", "luigi", *args[:3], "--help-all"], args[3:]
    if program == "gan-pipeline-distributed":
        return ["-m", "pipeline.training.worker", args[0], "--help"], args[1:]
    if program in ("python", "python3"):
        if args[:2] == ["-m", "pipeline"]:
            return ["-m", "pipeline", args[2], "--help"], args[3:]
        if args[:1] == ["-m"] and args[1].startswith("bench."):
            return [*args[:2], "--help"], args[2:]
        if args and args[0].startswith("bench/"):
            return [args[0], "--help"], args[1:]
    return None


SHOWN = sorted({(page, shlex.join(command)) for page in PAGES for command in commands(page)
                if project_program(command)})


@functools.cache
def help_text(program: tuple[str, ...]) -> str:
    result = subprocess.run([sys.executable, *program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert result.returncode == 0, f"{shlex.join(program)} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result.stdout


def test_the_pages_show_commands_of_the_project():
    assert {page for page, _ in SHOWN} >= {"README.md", "docs/datasets.md", "docs/runs.md", "docs/quality.md"}


@pytest.mark.parametrize("page, command", SHOWN)
def test_every_command_shown_is_one_the_command_line_accepts(page, command):
    """Each command's program (and luigi task, or subcommand) answers --help, and that help
    names every option the command gives; nothing is run."""
    program, args = project_program(shlex.split(command))
    text = help_text(tuple(program))
    if program[1] == "luigi":
        task = program[4]
        assert f"--{task}-" in text, f"{page}: luigi has no task {task}: {command}"
    accepted = set(FLAG.findall(text))
    unknown = [flag for flag in (word.split("=")[0] for word in args) if flag.startswith("--") and flag not in accepted]
    assert not unknown, f"{page}: {command}\n  gives options its --help does not list: {', '.join(unknown)}"


def test_the_readme_shows_the_test_command_that_ci_runs():
    ci_command = [line for line in read(".ci/run").splitlines() if line and not line.startswith("#")][-1]
    two_commands = split_fences(read("README.md"))[1][0][1]
    assert ci_command in two_commands.splitlines()


def test_the_parameter_reference_is_generated_from_the_code():
    from pipeline.reference import COMMAND

    result = subprocess.run([sys.executable, "-m", "pipeline.reference"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, PYTHONPATH=REPO_ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    if result.stdout != read("docs/parameters.md"):
        pytest.fail(f"docs/parameters.md no longer matches the parameters the code declares; regenerate it with "
                    f"`{COMMAND}` and commit it", pytrace=False)
