"""The README's quick start is what CI runs: keep them the same."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _quick_start_commands():
  text = (ROOT / "README.md").read_text()
  section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
  return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_quick_start_has_two_commands_and_ci_runs_the_second():
  commands = _quick_start_commands()
  assert len(commands) == 2, commands
  assert "python -m jopt demo" in commands[0]
  ci = (ROOT / ".ci" / "run").read_text().splitlines()
  assert commands[1].strip() in [line.strip() for line in ci]
