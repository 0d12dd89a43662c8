"""The embedded server's own settings file: extension folders and ``--overlord-server-setting`` values.

postgresql.conf includes ``overlord-settings.conf`` (a data directory made before it did gets the line
added). The file is rewritten only when its settings differ, and only while the server is down: so what
the file says is what the running server uses, and a reused data directory honours a changed setting
(embedded.py restarts a server whose file differs, when no other run is using it).
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import ConfigError
from ..serverconf import SERVER_SETTING_OPTION
from .postmaster import conf_string
from .private import replace_file

FILE = "overlord-settings.conf"
INCLUDE = f"include_if_exists = '{FILE}'"
_HEADER = "# written by pytest-overlord-db when they change: --overlord-extension-dir, --overlord-server-setting\n"


def render(pairs: list[tuple[str, str]]) -> str:
    return _HEADER + "".join(f"{name} = {conf_string(value)}\n" for name, value in pairs)


def current(pgdata: Path) -> str:
    """What the file says now; a missing one (or an old data directory's) is the same as no settings."""
    try:
        return (pgdata / FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return render([])


def write(pgdata: Path, text: str, owner: tuple[int, int] | None) -> None:
    """The file, then the include line where postgresql.conf lacks it; owned as the cluster is (root runs the
    server as its own OS user, who must be able to read it)."""
    replace_file(pgdata / FILE, text, owner)
    conf = pgdata / "postgresql.conf"
    if INCLUDE not in conf.read_text(encoding="utf-8", errors="replace").splitlines():
        with open(conf, "a", encoding="utf-8") as fh:
            fh.write(f"\n{INCLUDE}\n")


def refused(log_lines: list[str], settings: tuple[tuple[str, str], ...], server: str) -> ConfigError | None:
    """The paragraph for a server that would not start on one of the user's settings, read from its log
    (``server`` names it: "the embedded server (PostgreSQL 18)")."""
    for name, value in settings:
        said = [line for line in log_lines if re.search(rf'parameter "{re.escape(name)}"', line, re.IGNORECASE)]
        if not said:
            continue
        first = log_lines.index(said[0])
        hint = [line for line in log_lines[first + 1:first + 2] if re.search(r"\b(HINT|DETAIL):", line)]
        why = " ".join(_clean(line) for line in [said[0], *hint])
        return ConfigError(f"{SERVER_SETTING_OPTION}={name}={value}: {server} refuses it, so it did not start: "
                           f"{why} Fix the setting or drop it.")
    return None


def _clean(line: str) -> str:
    # "2026-12-03 08:40:01.123 UTC [123] LOG:  unrecognized ... in file "/x/overlord-settings.conf" line 2"
    text = re.sub(r"^.*?\b(LOG|FATAL|ERROR|HINT|DETAIL):\s+", "", line.strip())
    text = re.sub(r'\s+in file ".*?" line \d+', "", text)
    return text if text.endswith(".") else text + "."
