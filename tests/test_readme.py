"""README.md and docs/ as a new user follows them: the links lead somewhere, the commands name
options that exist, and the shell examples read only files an earlier step wrote."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from embedrec.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    prose = FENCE.sub("", path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for heading in re.findall(r"^#+\s+(.+)$", prose, re.M):
        anchor = github_anchor(heading)
        repeat = 1
        while anchor in found:  # GitHub numbers a repeated heading's anchor: -1, -2, ...
            anchor = f"{github_anchor(heading)}-{repeat}"
            repeat += 1
        found.add(anchor)
    return found


def test_relative_links_lead_to_a_file_and_heading():
    broken = []
    for doc in DOCS:
        prose = FENCE.sub("", doc.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            linked = (doc.parent / path) if path else doc
            if not linked.exists():
                broken.append(f"{doc.name}: {target} (no such file)")
            elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                broken.append(f"{doc.name}: {target} (no such heading)")
    assert not broken, broken


def shell_commands(text: str) -> list[str]:
    """The commands of the ```bash / ```sh blocks, continuation lines joined, in order."""
    commands = []
    for language, body in FENCE.findall(text):
        if language in ("bash", "sh"):
            joined = body.replace("\\\n", " ")
            commands += [line.split("  #")[0].strip() for line in joined.splitlines()]
    return [c for c in commands if c and not c.startswith("#")]


def options_of(path: list[str]) -> set[str] | None:
    """The options `embedrec PATH...` takes, or None where PATH names no command."""
    command: click.Command = main
    for name in path:
        if not isinstance(command, click.Group) or name not in command.commands:
            return None
        command = command.commands[name]
    return {opt for param in command.params for opt in param.opts + param.secondary_opts}


def test_embedrec_commands_in_the_docs_name_real_options():
    unknown = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for command in shell_commands(text) + re.findall(r"`(embedrec [^`]+)`", text):
            words = command.split()
            if "embedrec" not in words:
                continue
            words = words[words.index("embedrec") + 1 :]
            names = [w for w in words[:2] if re.fullmatch(r"[a-z]+", w)]
            options = options_of(names[:2]) or options_of(names[:1])
            if options is None:
                continue
            # a synopsis brackets its options: [--dim 32], --store PATH|postgresql://...
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(words)):
                if option not in options | {"--help", "-h"}:
                    unknown.append(f"{doc.name}: {option} in `{command}`")
    assert not unknown, unknown


def test_readme_shell_examples_read_what_an_earlier_step_wrote():
    # Followed top to bottom in one folder: `generate cars --out data/` writes the car data and
    # the Nightly section's one-liner writes events/; a local --interactions or --listings
    # names one of those, written before the command that reads it.
    text = README.read_text(encoding="utf-8")
    steps: list[tuple[int, str]] = []
    for match in FENCE.finditer(text):
        steps += [(match.start(), c) for c in shell_commands(match.group(0))]
    for match in re.finditer(r"`(python -c .*?)`\.?$", text, re.M):
        steps.append((match.start(), match.group(1)))
    written: set[str] = set()
    unread = []
    for _, command in sorted(steps):
        words = command.split()
        if words[:3] == ["embedrec", "generate", "cars"]:
            out = words[words.index("--out") + 1].rstrip("/")
            written |= {f"{out}/{name}.parquet" for name in ("listings", "interactions", "users")}
        written |= set(re.findall(r"to_parquet\('([^']+)'", command))
        for option, value in zip(words, words[1:], strict=False):
            is_local = not re.match(r"[a-z0-9]+://", value)
            if option in ("--interactions", "--listings") and is_local and value not in written:
                unread.append(f"{option} {value} in `{command}`")
    assert not unread, f"read before any step writes them: {unread}"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_bare_make_lists_the_targets_the_readme_names():
    named = set(re.findall(r"`make ([a-z-]+)`", README.read_text(encoding="utf-8")))
    named |= set(re.findall(r"^make ([a-z-]+)", README.read_text(encoding="utf-8"), re.M))
    # -n only prints what the default goal would run, so a wrong one creates no .venv here
    dry_run = subprocess.run(
        ["make", "-n", "-C", str(ROOT)], capture_output=True, text=True, check=True
    ).stdout
    listed = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True
    ).stdout
    assert {"demo", "test", "test-fast"} <= named
    for target in named:
        assert f"make {target} " in dry_run
        assert f"make {target} " in listed
