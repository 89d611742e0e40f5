"""``docs/provider-guide.md`` names only what exists, and mentions everything it must.

Cheap checks that keep the guide true as the code changes: where each name is imported
from, validation helpers, every ``Capabilities`` field with its default, every protected
operation of ``BaseMessagingService`` with its parameters (the claim API included: the
snippets and both examples implement it with the base's signatures), ``Claim``'s fields
and every ``StaleReason``, every ``Harness`` member and hook with its signature,
``HarnessSettings``' signature, the rules that need hooks, rule ids, error types,
``mqcontract verify`` options, how mqcontract is installed, and that its Python snippets
parse, import only what exists and pass ruff's checks.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mqcontract.errors
import mqcontract.validation
from mqcontract.capabilities import Capabilities
from mqcontract.errors import StaleReason
from mqcontract.messages import Claim
from mqcontract.registry import ENTRY_POINT_GROUP
from mqcontract.service import BaseMessagingService, MessagingService, QueueOperations
from mqcontract.testing import Harness, HarnessSettings
from mqcontract_conformance.harnesses import HARNESS_GROUP
from mqcontract_conformance.rules import GROUPS, all_rules
from mqcontract_conformance.verify import add_arguments

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "provider-guide.md"
#: The services of the providers the guide points to as written its way.
EXAMPLE_SERVICES = [
    ROOT
    / "examples"
    / "redis-streams-provider"
    / "src"
    / "mqcontract_redis_streams"
    / "service.py",
    ROOT / "examples" / "sqlite-provider" / "src" / "mq_sqlite" / "service.py",
]
TEXT = GUIDE.read_text(encoding="utf-8")


def _section(number: int) -> str:
    """The text of ``## <number>.`` up to the next level-two heading."""
    match = re.search(rf"^## {number}\. .*?(?=^## |\Z)", TEXT, re.M | re.S)
    assert match is not None, f"section {number} missing"
    return match.group(0)


def _table_rows(text: str) -> list[list[str]]:
    """Body rows of every Markdown table in ``text`` whose first cell is backticked."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def _mentioned(name: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", TEXT) is not None


def _code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", TEXT, re.M | re.S)


# -- installation and imports ----------------------------------------------------------


def test_mqcontract_is_never_installed_from_the_package_index() -> None:
    # Not published yet: a checkout (pip install -e PATH) or a wheel built from one.
    from_index = re.findall(r"pip install (?:-\S+ )*mqcontract\b(?![/\w.-])", TEXT)
    assert not from_index, f"the guide installs mqcontract from the index: {from_index}"


def test_every_name_in_the_import_table_is_importable_from_its_module() -> None:
    rows = _table_rows(_section(1))
    assert len(rows) >= 5, "the import table is missing or short"
    for row in rows:
        module = importlib.import_module(row[0].strip("`"))
        names = re.findall(r"`(\w+)`", row[1])
        missing = [n for n in names if not hasattr(module, n)]
        assert not missing, f"{module.__name__} has no {missing}"


def test_snippets_import_only_what_exists() -> None:
    for source in _code_blocks("python"):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mqcontract"):
                module = importlib.import_module(str(node.module))
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"from {node.module} import {missing}: no such name"


# -- validation helpers --------------------------------------------------------------


def test_every_validation_helper_named_exists_and_every_helper_is_named() -> None:
    exported = {n for n in mqcontract.validation.__all__ if n.startswith(("check_", "is_"))}
    named = set(re.findall(r"\b((?:check|is)_[a-z_]+)\(", TEXT))
    assert named <= exported, f"the guide names helpers that do not exist: {named - exported}"
    assert exported <= named, f"helpers missing from the guide: {exported - named}"


# -- capabilities ----------------------------------------------------------------------

_WORDS: dict[str, object] = {"7 days": 7 * 24 * 3600.0, "12 h": 12 * 3600.0, "1 MiB": 1_048_576}


def _default_in_guide(cell: str) -> object:
    if cell in _WORDS:
        return _WORDS[cell]
    if cell == "—":
        return dataclasses.MISSING
    literal = cell.strip("`")
    try:
        return ast.literal_eval(literal)
    except ValueError:
        return literal  # an enum member's name


def test_the_capabilities_table_lists_every_field_with_its_true_default() -> None:
    rows = {row[0].strip("`"): row[1] for row in _table_rows(_section(3))}
    fields = {f.name: f for f in dataclasses.fields(Capabilities)}
    assert set(rows) == set(fields), (
        f"not in the guide: {set(fields) - set(rows)}; not fields: {set(rows) - set(fields)}"
    )
    for name, cell in rows.items():
        default = fields[name].default
        stated = _default_in_guide(cell)
        actual = default.name if isinstance(default, enum.Enum) else default
        assert stated == actual, f"{name}: the guide says {cell}, the default is {default!r}"


# -- the protocol ----------------------------------------------------------------------


def test_every_protocol_member_is_mentioned() -> None:
    members = {
        n for cls in (QueueOperations, MessagingService) for n in vars(cls) if not n.startswith("_")
    }
    missing = sorted(n for n in members if not _mentioned(n))
    assert not missing, f"protocol members the guide never mentions: {missing}"


def _protected_operations() -> dict[str, list[str]]:
    """The protected operations of ``BaseMessagingService`` and their parameters.

    Its own plumbing (``_translated``, ``_settle_claim``, ...) takes the public operation's
    name first, for errors; an operation a provider implements never does.
    """
    operations = {}
    for name, member in vars(BaseMessagingService).items():
        if name.startswith("__") or not name.startswith("_"):
            continue
        if not inspect.iscoroutinefunction(member):
            continue
        params = [p for p in inspect.signature(member).parameters if p != "self"]
        if params[:1] != ["operation"]:
            operations[name] = params
    return operations


def test_the_operation_table_lists_every_protected_operation_with_its_parameters() -> None:
    stated = {}
    for row in _table_rows(_section(2)):
        match = re.fullmatch(r"`(_\w+)\(([^)]*)\)`", row[0])
        if match:
            params = [p.strip() for p in match.group(2).split(",") if p.strip()]
            stated[match.group(1)] = params
    actual = _protected_operations()
    assert {"_ack", "_nack", "_ack_many", "_receive"} <= set(actual), "unexpected base class"
    assert stated == actual, f"the guide's table: {stated}; the base class: {actual}"


def test_snippets_define_protected_operations_with_the_base_class_parameters() -> None:
    actual = _protected_operations()
    defined = 0
    for source in _code_blocks("python"):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.AsyncFunctionDef) and node.name in actual:
                params = [a.arg for a in node.args.args if a.arg != "self"]
                assert params == actual[node.name], f"snippet {node.name}({', '.join(params)})"
                defined += 1
    assert defined >= 2, "the guide shows no protected operation (_receive, _ack)"


@pytest.mark.parametrize("path", EXAMPLE_SERVICES, ids=lambda p: p.parent.name)
def test_the_examples_implement_the_claim_api_as_the_guide_says(path: Path) -> None:
    # "Both examples implement the protected operations only": none overrides a public
    # method that hands out or settles claims (the base class records them there).
    actual = _protected_operations()
    recording = {"receive_messages", "fetch_message", "subscribe_many", "subscribe"}
    settling = {n for n in vars(QueueOperations) if n.startswith(("ack_", "nack_"))}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.name not in recording | settling, f"{path.name} overrides {node.name}"
            if node.name in actual:
                params = [a.arg for a in node.args.args if a.arg != "self"]
                assert params == actual[node.name], f"{path.name}: {node.name}{params}"
    text = path.read_text(encoding="utf-8")
    for name in ("_ack", "_nack", "_receive"):
        assert f"async def {name}(" in text, f"{path.name} does not implement {name}"


def test_the_claim_and_every_stale_reason_are_described() -> None:
    fields = ", ".join(f.name for f in dataclasses.fields(Claim))
    assert f"Claim({fields})" in TEXT, f"the guide does not give Claim({fields})"
    missing = [r.name for r in StaleReason if f"StaleReason.{r.name}" not in TEXT]
    assert not missing, f"stale reasons the guide never names: {missing}"


def test_every_error_type_in_the_error_table_exists() -> None:
    section = _section(2).split("### Raise the right error", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    named = {n for row in rows for n in re.findall(r"`([A-Z][A-Za-z]+)[(`]", row.split("|")[-2])}
    assert len(named) >= 10, f"the error table is missing or short: {named}"
    unknown = {n for n in named if not hasattr(mqcontract.errors, n)}
    assert not unknown, f"error types that do not exist: {unknown}"


# -- the harness -----------------------------------------------------------------------


def test_every_harness_member_is_mentioned_and_every_hook_in_the_table_exists() -> None:
    members = {n for n in vars(Harness) if not n.startswith("_")}
    missing = sorted(n for n in members if not _mentioned(n))
    assert not missing, f"Harness members the guide never mentions: {missing}"
    hooks = {row[0].strip("`").split("(", 1)[0] for row in _table_rows(_section(6))}
    assert hooks, "the hook table is missing"
    assert hooks <= members, f"hooks that Harness does not have: {hooks - members}"


def test_the_hook_table_gives_each_hooks_true_signature() -> None:
    for row in _table_rows(_section(6)):
        stated = re.fullmatch(r"`(\w+)\(([^)]*)\) -> (.+)`", row[0])
        assert stated is not None, f"the hook table's first cell is not a signature: {row[0]}"
        name, params, returns = stated.groups()
        signature = inspect.signature(getattr(Harness, name))
        actual = [p for p in signature.parameters if p != "self"]
        assert [p.strip() for p in params.split(",") if p.strip()] == actual, f"{name}{signature}"
        assert returns == signature.return_annotation, f"{name} returns {signature}"


def test_harness_settings_signature_is_the_dataclass() -> None:
    stated = re.search(r"`HarnessSettings\(\*, ([^`]*)\)`", TEXT)
    assert stated is not None, "the guide does not give HarnessSettings' signature"
    fields = []
    for f in dataclasses.fields(HarnessSettings):
        default = "" if f.default is dataclasses.MISSING else f" = {f.default!r}"
        if f.default_factory is not dataclasses.MISSING:
            default = f" = {f.default_factory()!r}"
        fields.append(f"{f.name}: {f.type}{default}")
    assert stated.group(1) == ", ".join(fields)


def test_the_rules_needing_hooks_are_listed_as_the_registry_has_them() -> None:
    expected = "\n".join(" ".join([r.id, *r.hooks]) for r in all_rules() if r.hooks)
    listed = [block.strip() for block in _code_blocks("text")]
    assert expected in listed, f"the guide's list differs from the registry:\n{expected}"
    for hook in {h for r in all_rules() for h in r.hooks}:
        assert hasattr(Harness, hook), f"a rule needs {hook}, which Harness lacks"


# -- names, commands, snippets ---------------------------------------------------------


def test_every_rule_id_mentioned_exists() -> None:
    ids = {r.id for r in all_rules()}
    groups = "|".join(GROUPS)
    mentioned = set(re.findall(rf"\b(?:{groups})-\d+\b", TEXT))
    assert mentioned, "the guide names no rule"
    assert mentioned <= ids, f"rule ids that do not exist: {sorted(mentioned - ids)}"


def test_entry_point_groups_are_the_ones_the_code_reads() -> None:
    assert f'"{ENTRY_POINT_GROUP}"' in TEXT
    assert f'"{HARNESS_GROUP}"' in TEXT


def _verify_options() -> set[str]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return {s for action in parser._actions for s in action.option_strings}


def test_every_verify_option_the_guide_uses_exists() -> None:
    known = _verify_options()
    used: set[str] = set()
    for line in TEXT.splitlines():
        command = re.search(r"mqcontract verify (.*)", line)
        if command:
            options = command.group(1).split(" -- ", 1)[0]
            used |= set(re.findall(r"(?<!\S)(--?[a-z][a-z-]*)", options))
    used |= set(re.findall(r"`(--[a-z][a-z-]*)", TEXT)) - {"--mq-provider"}
    assert used, "the guide shows no verify command"
    assert used <= known, f"options mqcontract verify does not have: {sorted(used - known)}"


@pytest.mark.parametrize("index", range(len(_code_blocks("python"))))
def test_python_snippets_parse(index: int) -> None:
    source = _code_blocks("python")[index]
    ast.parse(source)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_python_snippets_pass_ruff(tmp_path: Path) -> None:
    """Each snippet on its own, as a reader pastes it: ruff's defaults plus ASYNC and isort
    (so ASYNC109, a ``timeout`` parameter on an ``async def``, is caught)."""
    for index, source in enumerate(_code_blocks("python")):
        (tmp_path / f"snippet_{index}.py").write_text(source, encoding="utf-8")
    command = [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache"]
    command += ["--extend-select", "ASYNC,I", "--output-format", "concise", "."]
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
