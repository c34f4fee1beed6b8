"""Every command the README and the site give names a script, make target
or command-line subcommand that exists, with options it accepts.

The long commands (the paper's runs, the benchmarks) cannot run in the
suite; their scripts run end to end at a smoke budget in
`test_reproductions.py`, `test_examples.py` and `tests/recipes/`. This
checks the commands as written against the code they call, so an option
renamed in a script cannot leave the docs behind."""

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + [
    page
    for page in sorted((ROOT / "docs").rglob("*.md"))
    if "data" not in page.relative_to(ROOT / "docs").parts
]
SCRIPT = re.compile(
    r"python (?:-m (?P<module>reproductions\.\w+)|(?P<path>(?:benchmarks|examples)/\w+\.py))"
    r"|keras-gradreg (?P<subcommand>train|evaluate)"
    r"|make (?P<target>[a-z][\w-]*)"
)
OPTION = re.compile(r"(?<![\w-])(--[a-z][\w-]*)")


def code_lines(text):
    """The page's code: fenced and indented blocks, with continuation lines
    joined, and its inline code spans."""
    lines, joined, fenced = [], "", False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            joined += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                lines.append(joined)
                joined = ""
        else:
            lines += re.findall(r"`([^`]+)`", line)
    return lines


def documented_commands():
    """(page, script kind, script name, the options it is given)."""
    found = []
    for page in PAGES:
        for line in code_lines(page.read_text()):
            line = line.split(" #")[0]
            matches = list(SCRIPT.finditer(line))
            for match, after in zip(matches, [*matches[1:], None]):
                tail = line[match.end() : after.start() if after else None]
                tail = re.split(r"[;|&]", tail)[0]
                kind = next(k for k, v in match.groupdict().items() if v)
                found.append((page.name, kind, match[kind], OPTION.findall(tail)))
    return found


def source_of(kind, name):
    """The text that declares what the command accepts, or None when the
    script or target does not exist."""
    if kind == "target":
        makefile = (ROOT / "Makefile").read_text()
        return makefile if re.search(rf"^{re.escape(name)}:", makefile, re.M) else None
    if kind == "subcommand":
        from keras_gradreg.src.tools.cli._parser import build_parser

        (commands,) = [
            action
            for action in build_parser()._actions
            if isinstance(action, argparse._SubParsersAction)
        ]
        options = commands.choices[name]._option_string_actions
        return " ".join(f'"{option}"' for option in options)
    path = ROOT / (name.replace(".", "/") + ".py" if kind == "module" else name)
    if not path.exists():
        return None
    text = path.read_text()
    # A script's options may come from the modules it builds on.
    for sibling in re.findall(r"^from \.(\w+) import", text, re.M):
        text += (path.parent / f"{sibling}.py").read_text()
    return text


COMMANDS = documented_commands()


def test_the_docs_give_commands_of_every_kind():
    kinds = {kind for _, kind, _, _ in COMMANDS}
    assert kinds == {"module", "path", "subcommand", "target"}, kinds
    assert len(COMMANDS) > 40


@pytest.mark.parametrize(
    "page, kind, name, options",
    COMMANDS,
    ids=[f"{page}:{name}" for page, _, name, _ in COMMANDS],
)
def test_documented_command_exists_and_accepts_its_options(page, kind, name, options):
    source = source_of(kind, name)
    assert source is not None, f"{page} runs {name}, which does not exist"
    for option in options:
        assert f'"{option}"' in source or f"'{option}'" in source, (
            f"{page} passes {option} to {name}, which does not declare it"
        )


def test_documented_extras_exist():
    """Every `pip install -e ".[a,b]"` the docs give names extras that
    pyproject.toml declares."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = {
        (page.name, extra)
        for page in PAGES
        for extras in re.findall(r'pip install -e "\.\[([\w,-]+)\]"', page.read_text())
        for extra in extras.split(",")
    }
    assert {extra for _, extra in named} >= {"jax", "cpu", "all"}, named
    for page, extra in sorted(named):
        assert extra in declared, f"{page} installs the undeclared extra [{extra}]"
