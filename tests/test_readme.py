"""The README tells the truth about the things code can check: the two commands, the configuration keys and
their defaults, and the CLI commands it tours."""

from __future__ import annotations

import re
import shlex

from stacks.config import FIELDS
from trainserve.cli import cli


def _readme(project_root) -> str:
    return (project_root / "README.md").read_text()


def test_the_two_commands_come_first_and_ci_runs_the_test_one(project_root):
    text = _readme(project_root)
    first_block = text.split("```bash", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block and "make test" in first_block
    assert "make test" in (project_root / ".ci" / "run").read_text()


def test_configuration_reference_lists_every_key_with_its_default(project_root):
    text = _readme(project_root)
    for f in FIELDS:
        default = (
            "null"
            if f.default is None
            else (str(f.default).lower() if isinstance(f.default, bool) else f.default)
        )
        assert re.search(rf"\| `{f.name}` \| `{re.escape(str(default))}` \|", text), f.name


def test_every_trainserve_command_in_the_readme_exists(project_root):
    text = _readme(project_root)
    commands = set()
    code = "\n".join(text.split("```")[1::2])  # inside fenced blocks only
    for line in code.splitlines():
        line = line.strip().lstrip("$ ")
        m = re.match(r"(?:\.venv/bin/)?trainserve ((?:[a-z]+)(?: [a-z]+)?)", line)
        if m:
            commands.add(tuple(shlex.split(m.group(1))))
    assert len(commands) > 10
    for words in commands:
        group = cli.commands.get(words[0])
        assert group is not None, words
        if len(words) > 1 and hasattr(group, "commands") and words[1] not in ("", "--help"):
            # "trainserve local start|stop" style lines are split on '|' by the reader; take the first
            assert words[1].split("|")[0] in group.commands, words
