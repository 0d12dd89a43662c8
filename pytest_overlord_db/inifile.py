"""The seed's yoyo.ini: a section per environment, ``${VAR}`` from the environment, and yoyo's own
``%inherit`` / ``%include`` and ``%(here)s``.

yoyo's reader knows only ``[DEFAULT]`` and ``%(VAR)s``; the seed's file uses
sections and ``${VAR}``. This reader honours both: ``%inherit = base.ini``
reads that file first (this one overrides it), ``%include = extra.ini`` reads
it after (it overrides this one), a leading ``?`` makes a file optional, and
``%(here)s`` is the folder of the file the value is written in. Values are
expanded when read, so an unset variable in a section nobody asked for is
never an error.
"""
from __future__ import annotations

import configparser
import os
import re
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_DEPTH = 10


def _files(path: Path, depth: int = 0) -> list[Path]:
    """``path`` with the files it inherits before it and the files it includes after it."""
    if depth > _MAX_DEPTH:
        raise ConfigError(f"{path}: %inherit/%include nest more than {_MAX_DEPTH} deep (a cycle?).")
    raw = configparser.ConfigParser(interpolation=None)
    try:
        raw.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise ConfigError(f"{path}: cannot parse it as an ini file: {exc}") from None

    def named(key: str) -> list[Path]:
        found = []
        for item in raw.defaults().get(key, "").split():
            optional = item.startswith("?")
            target = Path(item.lstrip("?").replace("%(here)s", str(path.parent)))
            target = target if target.is_absolute() else path.parent / target
            if target.is_file():
                found.extend(_files(target, depth + 1))
            elif not optional:
                raise ConfigError(f"{path}: {key} names {target}, which does not exist (prefix it with ? if optional).")
        return found

    return named("%inherit") + [path] + named("%include")


_SPACE = "\x00"  # stands for a space inside %(here)s until a value is read


class YoyoIni:
    """The project's yoyo.ini, with what it inherits and includes."""

    def __init__(self, path: Path, environ: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.environ = os.environ if environ is None else environ
        self.parser = configparser.ConfigParser(interpolation=None)
        for source in _files(path):
            # %(here)s is the file's folder, which may hold spaces: kept as one token (see _SPACE) until a
            # value is read, so that a space-separated list (yoyo's `sources`) splits where the user wrote spaces.
            text = source.read_text(encoding="utf-8").replace("%(here)s", str(source.parent).replace(" ", _SPACE))
            try:
                self.parser.read_string(text, source=str(source))
            except configparser.Error as exc:
                raise ConfigError(f"{source}: cannot parse it as an ini file: {exc}") from None

    def sections(self) -> list[str]:
        return self.parser.sections()

    def get(self, key: str, env: str | None = None) -> str | None:
        section = env or "DEFAULT"
        if section != "DEFAULT" and not self.parser.has_section(section):
            known = ", ".join(["DEFAULT", *self.sections()])
            raise ConfigError(
                f"{self.path}: there is no [{section}] section for environment {section!r}; "
                f"sections there: {known}."
            )
        raw = self._raw(key, section)
        return None if raw is None else self._expand(raw, key, section).replace(_SPACE, " ")

    def get_words(self, key: str, env: str | None = None) -> list[str] | None:
        """A value as the list of its space-separated words (a folder named by %(here)s stays one word)."""
        if self.get(key, env) is None:  # the section's errors, said once
            return None
        section = env or "DEFAULT"
        return [word.replace(_SPACE, " ") for word in self._expand(self._raw(key, section) or "", key, section).split()]

    def _raw(self, key: str, section: str) -> str | None:
        return self.parser.get(section, key, fallback=None)

    def _expand(self, raw: str, key: str, section: str) -> str:
        def repl(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise ConfigError(
                    f"{self.path}: [{section}] {key} uses ${{{name}}}, but the environment "
                    f"variable {name} is not set. Set it, or pass the value as an option."
                )
            return self.environ[name]

        return _VAR.sub(repl, raw)

    def migrations_dir(self, env: str | None = None) -> tuple[Path, str] | None:
        """The migrations folder and the key it was read from (``migrations``, else yoyo's ``sources``)."""
        for key in ("migrations", "sources"):
            value, words = self.get(key, env), self.get_words(key, env)
            if value and words:
                # yoyo separates several sources by spaces; a path with spaces in it is one
                # folder when that folder exists (or when %(here)s brought the spaces).
                whole = Path(value.strip())
                path = whole if (whole if whole.is_absolute() else self.path.parent / whole).is_dir() else Path(words[0])
                return (path if path.is_absolute() else self.path.parent / path), key
        return None


def find(root: Path) -> Path | None:
    candidate = root / "yoyo.ini"
    return candidate if candidate.is_file() else None


def open_ini(root: Path, environ: Mapping[str, str]) -> YoyoIni | None:
    """The project's yoyo.ini, if it has one."""
    path = find(root)
    return YoyoIni(path, environ) if path else None
