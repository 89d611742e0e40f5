"""README.md as a list of code blocks with their annotations (the scheme: ``test_readme``).

Only parsing lives here, so that a malformed annotation is reported against the block it
belongs to, and the rules are testable without running anything.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DONE_ENV", "LANGUAGES", "Block", "apply_args", "done_elsewhere", "parse_readme"]

#: Ids of blocks a step outside the tests ran as written (``.ci/run`` runs the Quick
#: start's first block as its install step), comma-separated: not run again here.
DONE_ENV = "MQCONTRACT_README_DONE"

#: Fence language -> how the block is tested.
LANGUAGES = {
    "sh": "shell",
    "bash": "shell",
    "shell": "shell",
    "python": "python",
    "py": "python",
    "toml": "toml",
    "yaml": "yaml",
    "yml": "yaml",
    "text": "output",  # shows what a command prints; nothing to run
}
#: Directive -> the kinds it applies to.
DIRECTIVES = {
    "skip": {"shell", "python", "toml", "yaml", "output"},
    "args": {"shell"},
    "env": {"shell", "python"},
    "backends": {"python"},
    "outside-repo": {"shell"},
}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<lang>[^\s`]*)\s*$")
_ANNOTATION = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
_HEADING = re.compile(r"^#{1,6}\s+(?P<title>.+?)\s*#*\s*$")


@dataclass
class Block:
    """One fenced block: where it is, what it says, and how it is to be run."""

    line: int  # of the opening fence, 1-based
    section: str
    index: int  # within its section, from 1
    lang: str
    text: str
    skip: str | None = None
    args: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    outside_repo: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return LANGUAGES.get(self.lang, "unknown")

    @property
    def id(self) -> str:
        """Stable across edits elsewhere in the README (xdist workers must agree)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")
        return f"{slug or 'top'}-{self.index}-{self.lang or 'plain'}"


def _directive(block: Block, body: str) -> None:
    name, _, rest = body.partition(":") if body.startswith("skip") else body.partition(" ")
    name, rest = name.strip(), rest.strip()
    if name not in DIRECTIVES:
        block.errors.append(f"unknown annotation {body!r} (known: {', '.join(DIRECTIVES)})")
        return
    if block.kind not in DIRECTIVES[name]:
        block.errors.append(f"annotation {name!r} does not apply to a {block.lang} block")
        return
    try:
        tokens = shlex.split(rest) if name in {"args", "env"} else []
    except ValueError as exc:
        block.errors.append(f"annotation {body!r}: {exc}")
        return
    if name == "skip":
        if not rest:
            block.errors.append("skip needs a reason: <!-- readme-test: skip: REASON -->")
        block.skip = rest
    elif name == "args":
        if not tokens or len(tokens) % 2 or not all(t.startswith("-") for t in tokens[::2]):
            block.errors.append(f"args takes option/value pairs, got {rest!r}")
            return
        block.args += list(zip(tokens[::2], tokens[1::2], strict=True))
    elif name == "env":
        for token in tokens:
            key, eq, value = token.partition("=")
            if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                block.errors.append(f"env takes NAME=VALUE, got {token!r}")
            block.env[key] = value
    elif name == "backends":
        block.backends += [b for b in re.split(r"[,\s]+", rest) if b]
        if not block.backends:
            block.errors.append("backends needs at least one provider name")
    elif name == "outside-repo":
        if rest:
            block.errors.append(f"outside-repo takes no value, got {rest!r}")
        block.outside_repo = True


def parse_readme(markdown: str) -> tuple[list[Block], list[str]]:
    """The blocks, and the errors that belong to no block (dangling annotations)."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    stray: list[str] = []
    pending: list[tuple[int, str]] = []
    section, per_section = "", 0
    i = 0
    while i < len(lines):
        line = lines[i]
        note, fence = _ANNOTATION.match(line), _FENCE.match(line)
        if note:
            pending.append((i + 1, note["body"]))
        elif fence:
            per_section += 1
            mark, width = re.escape(fence["fence"][0]), len(fence["fence"])
            close = re.compile(rf"^ {{0,3}}{mark}{{{width},}}\s*$")
            end = next((j for j in range(i + 1, len(lines)) if close.match(lines[j])), len(lines))
            indent = len(fence["indent"])
            body = "\n".join(x[indent:] if x[:indent].isspace() else x for x in lines[i + 1 : end])
            block = Block(i + 1, section, per_section, fence["lang"].lower(), body + "\n")
            if block.kind == "unknown":
                block.errors.append(f"fence language {fence['lang']!r} is not one the test runs")
            for _, body_text in pending:
                _directive(block, body_text)
            pending = []
            blocks.append(block)
            i = end
        else:
            if pending and line.strip():
                stray += [_dangling(n, b) for n, b in pending]
                pending = []
            heading = _HEADING.match(line)
            if heading:
                section, per_section = heading["title"], 0
        i += 1
    stray += [_dangling(n, b) for n, b in pending]
    return blocks, stray


def _dangling(line: int, body: str) -> str:
    return f"README line {line}: annotation {body!r} is not above a block"


def apply_args(script: str, args: list[tuple[str, str]]) -> str:
    """``script`` with each option's value replaced; an option it lacks is an error."""
    for option, value in args:
        pattern = re.compile(rf"(?<![\w-])({re.escape(option)}(?:=|[ \t]+))\S+")
        script, count = pattern.subn(r"\g<1>" + value.replace("\\", r"\\"), script)
        if not count:
            raise ValueError(f"args: the block has no {option} to replace")
    return script


def done_elsewhere(environ: Mapping[str, str] | None = None) -> set[str]:
    """The ids named in :data:`DONE_ENV` (of ``os.environ`` unless given)."""
    text = (os.environ if environ is None else environ).get(DONE_ENV, "")
    return {part.strip() for part in text.split(",") if part.strip()}


if __name__ == "__main__":  # python3 tests/readme_blocks.py BLOCK_ID: print its text
    import sys
    from pathlib import Path

    wanted = sys.argv[1]
    readme = Path(__file__).resolve().parent.parent / "README.md"
    found = [b for b in parse_readme(readme.read_text())[0] if b.id == wanted]
    if len(found) != 1 or found[0].errors:
        sys.exit(f"README.md: no block {wanted!r} to run")
    sys.stdout.write(found[0].text)
