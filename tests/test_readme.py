"""README.md, run as written: every code block is a test item, so the README cannot drift.

How each fenced block is tested (by its language):

* ``sh``/``bash``: run through ``bash -euo pipefail`` in a scratch copy of the repository
  (tracked files are never touched), where ``.venv`` links to the venv running these tests
  and its ``bin`` leads ``PATH``; a block that makes its own ``python3 -m venv .venv`` gets
  a real, fresh one. It must exit 0.
* ``python``: run as a program with that venv's Python, in an empty directory. A block
  whose first line is ``# NAME.py`` is a set of files (each starting at such a line) run
  with ``python -m pytest`` there: every test must pass, none may skip.
* ``toml``: parsed and loaded through ``mqcontract.config.load_config``; a ``pyproject.toml``
  fragment (a ``[project…]`` table) instead must only use the entry-point groups the
  registries read, with ``module:attr`` values.
* ``yaml``: a GitHub workflow; parsed, and every ``mqcontract …`` command it runs must be
  accepted by the CLI's own parser (nothing is run).
* ``text``: shows output; not run. Any other language fails.

Every block runs with ``DATABASE_URL`` naming a scratch database with PGMQ installed (as
after the README's ``mqcontract pgmq install``), dropped afterwards, and with
``tests/readme_stub`` on ``PYTHONPATH``, so ``my_package`` (the README's name for the
reader's provider) imports: a stub around the in-memory provider and harness. A block
that names ``pgmq`` or ``rabbitmq`` skips, with the reason, when that backend is
unreachable, unless ``MQCONTRACT_REQUIRE_BACKENDS`` is set; then it fails.

Annotations: HTML comments (invisible on rendering) above a block's opening fence, one
directive each; a block without one runs as it stands::

    <!-- readme-test: skip: REASON -->           not run; reported as skipped with REASON
    <!-- readme-test: args --opt VALUE ... -->   shell: replace the value of options the
                                                 block has (to shrink a long run)
    <!-- readme-test: env NAME=VALUE ... -->     extra environment (shell, python)
    <!-- readme-test: backends a,b,... -->       python: run once per
                                                 TASKER_MESSAGING_BACKEND, in turn
    <!-- readme-test: outside-repo -->           shell: run in an empty directory (a
                                                 command for the reader's own project)

An unknown directive, one that does not fit the block, or one above no block fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mqcontract.config import load_config
from mqcontract.errors import MessagingError
from mqcontract.registry import ENTRY_POINT_GROUP
from mqcontract_conformance.cli import build_parser
from mqcontract_conformance.harnesses import HARNESS_GROUP
from mqcontract_conformance.provisioning import backends_required, unavailable
from tests.readme_blocks import DONE_ENV, Block, apply_args, done_elsewhere, parse_readme

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
STUB = REPO / "tests" / "readme_stub"
VENV = Path(sys.prefix)
#: Bound on one block (one backend of a python block).
BLOCK_TIMEOUT = 240.0
#: Not copied into a scratch copy of the repository.
NOT_COPIED = shutil.ignore_patterns(
    ".venv", ".git", ".tox", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "node_modules"
)

BLOCKS, STRAY = parse_readme(README.read_text(encoding="utf-8"))


@dataclass
class Services:
    """What the blocks run against: environment, and why a backend is missing."""

    env: dict[str, str]
    missing: dict[str, str]


async def _probe_rabbitmq() -> None:
    from mqcontract.providers.rabbitmq.service import open_connection

    rabbit = load_config(validate_backend=False).rabbitmq
    connection = await open_connection(rabbit, "rabbitmq", "mqcontract-readme-probe")
    await connection.close()


async def _scratch_database() -> str:
    from mqcontract.providers.pgmq import install_pgmq
    from mqcontract_fixtures.pgmq import create_database

    admin = load_config(validate_backend=False).pgmq.database_url
    url = await create_database(admin, f"mqc_readme_{secrets.token_hex(4)}")
    await install_pgmq(url)
    return url


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """The environment blocks run in (one scratch database per session and worker)."""
    from mqcontract_fixtures.pgmq import drop_database

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    for name in ("TASKER_MESSAGING_BACKEND", "MQCONTRACT_CONFIG", "VIRTUAL_ENV"):
        env.pop(name, None)  # the README describes the defaults
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STUB), env.get("PYTHONPATH")]))
    missing: dict[str, str] = {}
    database: str | None = None
    try:
        database = asyncio.run(_scratch_database())
        env["DATABASE_URL"] = database
    except MessagingError as exc:
        missing["pgmq"] = str(exc)
    try:
        asyncio.run(_probe_rabbitmq())
    except MessagingError as exc:
        missing["rabbitmq"] = str(exc)
    yield Services(env, missing)
    if database is not None:
        admin = load_config(validate_backend=False).pgmq.database_url
        asyncio.run(drop_database(admin, database.rsplit("/", 1)[1]))


def _run(command: list[str], cwd: Path, env: dict[str, str], what: str) -> str:
    """Run ``command`` bounded by :data:`BLOCK_TIMEOUT`, killing its whole process group."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            output, _ = process.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"{what}: still running after {BLOCK_TIMEOUT:.0f} s:\n{output[-3000:]}")
    if process.returncode != 0:
        pytest.fail(f"{what}: exit status {process.returncode}:\n{output[-5000:]}")
    return output


def _needs(block: Block, services: Services) -> None:
    """Skip (or fail, when backends are required) a block whose backend is missing."""
    text = (block.text + " ".join(block.backends)).lower()
    for backend, reason in services.missing.items():
        if backend in text:
            message = f"README line {block.line} needs {backend}: {reason}"
            unavailable(message, required=backends_required()).enforce()


def _shell(block: Block, services: Services, tmp_path: Path) -> None:
    script = apply_args(block.text, block.args)
    cwd = tmp_path / "work"
    if block.outside_repo:
        cwd.mkdir()
    else:
        shutil.copytree(REPO, cwd, ignore=NOT_COPIED, symlinks=True)
    if not re.search(r"-m\s+venv\s+\.venv\b", script):
        (cwd / ".venv").symlink_to(VENV, target_is_directory=True)
    env = {**services.env, **block.env}
    _run(["bash", "-euo", "pipefail", "-c", script], cwd, env, f"README line {block.line}")


def _files(text: str) -> dict[str, str]:
    """``# NAME.py`` sections of a block, as files."""
    parts = re.split(r"^# ([\w./-]+\.py)[ \t]*\n", text, flags=re.MULTILINE)
    if parts[0].strip():
        raise ValueError("text before the first `# NAME.py` line")
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def _python(block: Block, services: Services, tmp_path: Path) -> None:
    python = str(VENV / "bin" / "python")
    env = {**services.env, **block.env}
    where = f"README line {block.line}"
    if re.match(r"# [\w./-]+\.py\s*\n", block.text):
        for name, body in _files(block.text).items():
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(body)
        pytest_command = [python, "-m", "pytest", "-p", "no:cacheprovider", "-rs"]
        summary = _run(pytest_command, tmp_path, env, where).strip().splitlines()[-1]
        assert "passed" in summary, f"{where}: {summary}"
        assert "skipped" not in summary, f"{where}: every test must run: {summary}"
        return
    program = tmp_path / "readme_block.py"
    program.write_text(block.text)
    for backend in block.backends or [""]:
        run_env = {**env, "TASKER_MESSAGING_BACKEND": backend} if backend else env
        _run([python, str(program)], tmp_path, run_env, f"{where} ({backend or 'default'})")


def _toml(block: Block, tmp_path: Path) -> None:
    data = tomllib.loads(block.text)
    if "project" not in data:  # an mqcontract configuration file
        path = tmp_path / "mqcontract.toml"
        path.write_text(block.text)
        load_config(path, environ={})
        return
    groups = data["project"].get("entry-points", {})
    assert groups, f"README line {block.line}: a pyproject fragment without entry points"
    for group, entries in groups.items():
        assert group in {ENTRY_POINT_GROUP, HARNESS_GROUP}, f"unknown entry-point group {group}"
        for name, target in entries.items():
            assert re.fullmatch(r"[\w.]+:[\w.]+", target), f"{group}.{name} = {target!r}"


def _yaml(block: Block) -> None:
    workflow = yaml.safe_load(block.text)
    commands = [
        line
        for job in workflow["jobs"].values()
        for step in job["steps"]
        for line in str(step.get("run", "")).splitlines()
        if line.strip().startswith("mqcontract ")
    ]
    assert commands, f"README line {block.line}: the workflow runs no mqcontract command"
    for command in commands:
        try:
            build_parser().parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            pytest.fail(f"README line {block.line}: `{command}` is not a valid command ({exc})")


def test_annotations_are_known_and_above_a_block() -> None:
    problems = STRAY + [f"README line {b.line}: {e}" for b in BLOCKS for e in b.errors]
    assert not problems, "\n".join(problems)


def test_the_readme_has_blocks_of_every_kind() -> None:
    """The extractor finds what the README shows (a parser bug must not pass vacuously)."""
    assert {b.kind for b in BLOCKS} >= {"shell", "python", "toml", "yaml"}


def test_the_extractor_rejects_what_it_cannot_honour() -> None:
    sample = "\n".join(
        [
            "# Title",
            "<!-- readme-test: shrink a lot -->",
            "```sh",
            "run --messages 9",
            "```",
            "<!-- readme-test: backends memory -->",
            "```sh",
            "true",
            "```",
            "<!-- readme-test: skip: no -->",
            "text in between",
            "```",
            "plain",
            "```",
            "<!-- readme-test: args --messages 1 -->",
            "~~~bash",
            "run --messages 9 --rounds=2",
            "~~~",
        ]
    )
    blocks, stray = parse_readme(sample)
    assert [b.id for b in blocks] == ["title-1-sh", "title-2-sh", "title-3-plain", "title-4-bash"]
    assert "unknown annotation" in blocks[0].errors[0]
    assert "does not apply to a sh block" in blocks[1].errors[0]
    assert "is not one the test runs" in blocks[2].errors[0]
    assert stray == ["README line 10: annotation 'skip: no' is not above a block"]
    assert apply_args(blocks[3].text, blocks[3].args) == "run --messages 1 --rounds=2\n"
    with pytest.raises(ValueError, match="no --vt"):
        apply_args(blocks[3].text, [("--vt", "1")])


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, services: Services, tmp_path: Path) -> None:
    assert not block.errors, f"README line {block.line}: {'; '.join(block.errors)}"
    if block.skip is not None:
        pytest.skip(f"README line {block.line}: {block.skip}")
    if block.id in done_elsewhere():
        pytest.skip(f"README line {block.line}: run as written by .ci/run ({DONE_ENV})")
    if block.kind == "output":
        pytest.skip(f"README line {block.line}: shows output, nothing to run")
    if block.kind in {"shell", "python"}:
        _needs(block, services)
    if block.kind == "shell":
        _shell(block, services, tmp_path)
    elif block.kind == "python":
        _python(block, services, tmp_path)
    elif block.kind == "toml":
        _toml(block, tmp_path)
    elif block.kind == "yaml":
        _yaml(block)
