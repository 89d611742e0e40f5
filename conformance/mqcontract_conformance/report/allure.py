"""The Allure single-file report, when the ``allure`` tool is installed (it needs Java).

The tool is the npm package ``allure-commandline``; it is optional. Found, in order: the
``--allure-bin`` option, ``$ALLURE_BIN``, ``allure`` on ``PATH``, then
``.tox/allure-cli/node_modules/.bin/allure`` (where
``npm install --prefix .tox/allure-cli allure-commandline`` puts it). Analytics are off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["LOCAL_INSTALL", "allure_result_dirs", "find_allure", "generate_allure"]

LOCAL_INSTALL = Path(".tox/allure-cli/node_modules/.bin/allure")
#: Bound on one ``allure generate`` run.
TIMEOUT = 600


def find_allure(explicit: str | None = None) -> str | None:
    """The path of the ``allure`` executable, or None when it is not installed."""
    for candidate in (explicit, os.environ.get("ALLURE_BIN")):
        if candidate:
            return shutil.which(candidate)
    found = shutil.which("allure")
    if found:
        return found
    return str(LOCAL_INSTALL.resolve()) if LOCAL_INSTALL.exists() else None


def allure_result_dirs(root: Path) -> list[Path]:
    """``root`` and its subdirectories that hold Allure result files, sorted."""
    if not root.is_dir():
        return []
    dirs = [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
    return [d for d in dirs if any(d.glob("*-result.json"))]


def generate_allure(executable: str, results: list[Path], out: Path) -> str:
    """Run ``allure generate --single-file``; return the report file, or raise with output."""
    env = {**os.environ, "ALLURE_NO_ANALYTICS": "true"}
    command = [executable, "generate", "--single-file", "--clean", "-o", str(out)]
    done = subprocess.run(
        [*command, *map(str, results)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    report = out / "index.html"
    if done.returncode != 0 or not report.exists():
        raise RuntimeError(f"allure generate failed ({done.returncode}): {done.stderr.strip()}")
    return str(report)
