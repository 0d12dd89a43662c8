"""The docs are tested: every example in docs/ runs, and everything they name exists.

The conventions for examples are in docs/index.md ("For writers of these pages"). Pages in PROJECTS
need a project of their own; the examples of all other pages run together in one.
"""
from __future__ import annotations

import functools
import json
import pkgutil
import re
import shutil
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pytest_overlord_db import ServerError, cli
from pytest_overlord_db.config import read_accepted
from pytest_overlord_db.migrators import AppliedInfo, Migration, for_folder
from pytest_overlord_db.plugin import errors as plugin_errors
from pytest_overlord_db.plugin.options import OPTIONS
from pytest_overlord_db.roundtrip import FULL_CYCLE, Report, Verdict

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"\A(?:#|--) file: (\S+)\n")
TEST_DEF = re.compile(r"^\s*(?:async\s+)?def test_", re.M)
NOT_RUN = {"console", "bash", "toml", "yaml", "ini", "text"}
COMMANDS = ("status", "migrate", "rollback", "seed", "new", "roundtrip", "cache list", "cache clear")
CUSTOM = "numbered_sql:NumberedSqlMigrator"
# page -> (its migrations folder in the project, its migrator, extra pytest flags)
PROJECTS = {
    "how-to/custom-migrator.md": ("sql", CUSTOM, ["--overlord-migrations=sql", f"--overlord-migrator={CUSTOM}"]),
    "how-to/sql-folders.md": ("migrations", "auto", []),
    "how-to/extensions.md": ("migrations", "auto", []),
}


def read(page: str) -> str:
    return (DOCS / page).read_text(encoding="utf-8")


def blocks(page: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(read(page))]


def prose(page: str) -> str:
    return FENCE.sub("", read(page))


def normalized(text: str) -> str:
    return " ".join(text.split())


def write_examples(project, pages: list[str]) -> int:
    """Write the pages' examples into the project; return how many test functions they define."""
    tests, own_migrations = 0, False
    for page in pages:
        for n, (lang, text) in enumerate(blocks(page)):
            marker = MARKER.match(text)
            if marker:
                path, text = marker.group(1), text[marker.end():]
                if path.startswith("migrations/") and not own_migrations:  # the page brings its own: drop the copy
                    shutil.rmtree(project.root / "migrations")
                    own_migrations = True
            elif lang == "python":
                assert TEST_DEF.search(text), f"{page}: python block {n} is neither a test module nor a `# file:` block"
                path = f"tests/test_{re.sub(r'[^a-z0-9]+', '_', page[:-3])}_{n}.py"
            else:
                assert lang in NOT_RUN | {"json"}, f"{page}: block {n} ({lang or 'no info string'}) is neither run nor checked"
                continue
            project.write(path, text)
            tests += len(TEST_DEF.findall(text)) if Path(path).name.startswith("test_") else 0
    return tests


def readable_by_the_server(folder: Path, project) -> None:
    """An extension folder of an example, moved beside the project's data directory and linked back: pytest makes
    tmp_path private (0700), and under root the embedded server runs as its own OS user, who must read it."""
    moved = project.datadir.with_name(project.datadir.name + "-" + folder.name)  # removed with the data directory
    shutil.move(str(folder), moved)
    folder.symlink_to(moved)


@pytest.mark.slow
@pytest.mark.parametrize("group", [*PROJECTS, "shared"])
def test_the_examples_pass(group, project, monkeypatch):
    pages = [group] if group in PROJECTS else [p for p in PAGES if p not in PROJECTS]
    folder, migrator, flags = PROJECTS.get(group, ("migrations", "auto", []))
    tests = write_examples(project, pages)
    if (project.root / "extensions").is_dir():
        readable_by_the_server(project.root / "extensions", project)
    monkeypatch.syspath_prepend(str(project.root))  # the custom migrator's module, for counting its chain here
    chain = for_folder(project.root / folder, migrator).chain()
    project.env["PYTHONPATH"] = str(project.root)
    result = project.result("-q", *flags, "--overlord-roundtrip", "tests")
    assert result.ret == 0, "\n".join(result.outlines + result.errlines)
    # Round-trip items: one per migration, the full cycle, and the accepted list when there is one.
    result.assert_outcomes(passed=tests + len(chain) + 1 + bool(read_accepted(project.root)))
    assert tests and not project.server_processes()
    if group == "how-to/custom-migrator.md":  # the page's CLI line, in-process
        monkeypatch.chdir(project.root)
        env = {"OVERLORD_MIGRATOR": CUSTOM, "OVERLORD_DATADIR": str(project.datadir), "OVERLORD_DB_URL": None}
        done = CliRunner().invoke(cli.app, ["roundtrip", "--migrations", "sql", "--format", "json"], env=env)
        assert done.exit_code == 0, done.output
        assert [m["status"] for m in json.loads(done.stdout)["migrations"]] == ["ok", "ok"]


@functools.cache
def help_flags(*command: str) -> set[str] | None:
    """The flags `overlord-db COMMAND --help` prints, or None when there is no such command."""
    done = CliRunner().invoke(cli.app, [*command, "--help"], env={"COLUMNS": "200"})
    return set(re.findall(r"--[a-z][\w-]*", done.output)) if done.exit_code == 0 else None


def command_lines(page: str) -> list[str]:
    """Shell lines of the page's not-run blocks, plus its inline `code` that is a command."""
    lines = []
    for lang, text in blocks(page):
        for line in text.replace("\\\n", " ").splitlines() if lang in NOT_RUN else []:
            if lang != "console" or line.startswith("$ "):  # a console block's other lines are output
                lines.append(re.sub(r"\s#.*", "", line.removeprefix("$ ")))
    spans = [" ".join(code.split()) for code in re.findall(r"`([^`]+)`", prose(page))]  # a span may wrap lines
    return lines + [code for code in spans if re.search(r"\b(?:pytest|overlord-db) ", code)]


def problems_in(segment: str, pytest_flags: set[str]) -> list[str]:
    """An unknown `overlord-db` command or flag, or an unknown pytest flag, in one shell command."""
    tokens = segment.split()
    for i, token in enumerate(tokens):
        if token in ("overlord-db", "pytest"):
            rest = tokens[i + 1:]
            named = rest[:1] if rest and rest[0][0].isalpha() and not rest[0].isupper() else []  # COMMAND: a placeholder
            if named and len(rest) > 1 and rest[1][:1].isalpha() and help_flags(*named, rest[1]) is not None:
                named = rest[:2]  # a group's command: `overlord-db cache clear`
            known = pytest_flags if token == "pytest" else help_flags(*named)
            if known is None:
                return [f"no such command: `{segment.strip()}`"]
            flags = [t.split("=")[0] for t in rest if t.startswith("--")]
            return [f"unknown flag {f} in `{segment.strip()}`" for f in flags if f not in known]
    return []


def test_every_command_and_flag_the_docs_mention_exists(pytestconfig):
    # pytest's own flags, the plugin's and xdist's: the parser of this very run knows them all.
    pytest_flags = set(pytestconfig._parser._opt2dest)  # private, but the one place listing every flag
    assert {flag for flag, *_ in OPTIONS} | {"--overlord-roundtrip", "--help"} <= pytest_flags
    wrong = [f"{page}: {problem}" for page in PAGES for line in command_lines(page)
             for segment in re.split(r"&&|\|\||[|;]", line) for problem in problems_in(segment, pytest_flags)]
    all_flags = pytest_flags.union(*(help_flags(*c.split()) or set() for c in COMMANDS))
    envs = {env for _, _, env, _ in OPTIONS} | {"OVERLORD_ENV"}
    envs |= set(re.findall(r"\bOVERLORD_TEST_[A-Z_]+", (REPO / "tests" / "test_docker.py").read_text()))  # what it reads
    for page in PAGES:
        wrong += [f"{page}: unknown flag {f}" for f in re.findall(r"`\s*(--[a-z][\w-]*)", prose(page)) if f not in all_flags]
        wrong += [f"{page}: unknown variable {v}" for v in re.findall(r"\bOVERLORD_[A-Z_]+", read(page)) if v not in envs]
    assert not wrong, "\n".join(wrong)


def test_links_paths_and_names_exist():
    wrong = []
    for page in PAGES:
        text, here = prose(page), (DOCS / page).parent
        for target in (t for t in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", t)):  # not http: etc.
            path, _, anchor = target.partition("#")
            resolved = (here / path).resolve() if path else DOCS / page
            if not resolved.exists():
                wrong.append(f"{page}: broken link {target}")
            elif anchor and resolved.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", FENCE.sub("", resolved.read_text()), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
                wrong += [] if anchor in slugs else [f"{page}: no heading #{anchor} in {path or page}"]
        for code in (c.strip() for c in re.findall(r"`([^`]+)`", text)):
            if re.fullmatch(r"(?:pytest_overlord_db|bench|migrations|seeds|tests|docs|\.ci)/[\w./-]*", code):
                wrong += [] if (REPO / code).exists() else [f"{page}: no such path {code}"]
            elif re.fullmatch(r"pytest_overlord_db(?:\.\w+)+", code):
                try:
                    pkgutil.resolve_name(code)
                except (ImportError, AttributeError):
                    wrong.append(f"{page}: no such name {code}")
    linked = set(re.findall(r"\]\(([^)#\s]+)", read("index.md")))
    wrong += [f"index.md does not list {p}" for p in PAGES if p != "index.md" and p not in linked]
    assert not wrong, "\n".join(wrong)


def test_the_references_are_complete():
    options, cli_page = read("reference/options.md"), read("reference/cli.md")
    missing = [name for option in OPTIONS for name in option[:3] if f"`{name}" not in options]
    for command in COMMANDS:
        section = cli_page.split(f"## `overlord-db {command}", 1)[-1].split("\n## ", 1)[0]
        missing += [f"{command} {flag}" for flag in sorted((help_flags(*command.split()) or {"?"}) - {"--help"}) if f"`{flag}" not in section]
    assert not missing, missing


def shape(value):
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    return [shape(value[0])] if isinstance(value, list) and value and isinstance(value[0], dict) else None


def test_the_json_examples_have_the_real_keys(monkeypatch, tmp_path):
    entry = {"object": "extension vector", "reason": "kept"}
    stale = {"migration": "0002.x", "object": "table public.t", "reason": "r", "why": "no such migration"}
    gap = {"table": "public.t", "migration": "0001.x", "why": "column c is of type point"}
    report = Report([Verdict("0001.x", accepted=[entry])], Verdict(FULL_CYCLE, accepted=[entry]), [stale], 0.1, [gap])

    stub = SimpleNamespace(  # a migrator needing no database: status only asks these two
        chain=lambda: [Migration("0001.x", tmp_path, True), Migration("0002.y", tmp_path, True)],
        applied=lambda url: [AppliedInfo("0001.x", datetime(2025, 1, 1, 12), 41.23)])
    monkeypatch.setattr(cli, "for_folder", lambda folder, name: stub)
    (tmp_path / "migrations").mkdir()  # the command checks the folder is there before it asks the migrator
    monkeypatch.chdir(tmp_path)
    status = CliRunner().invoke(cli.app, ["status", "--format", "json", "--database-url", "postgresql://me:pw@h/app"])
    real = {"migrations": shape(json.loads(report.to_json())), "applied": shape(json.loads(status.stdout))}
    examples = [json.loads(text) for lang, text in blocks("reference/json.md") if lang == "json"]
    assert [shape(e) for e in examples] == [real["migrations"], real["applied"]]


def test_quoted_messages_are_the_real_ones(monkeypatch):
    from pytest_overlord_db.servers import docker

    monkeypatch.setattr(docker, "docker_available", lambda timeout=1.0: (False, "no DOCKER_HOST and no /var/run/docker.sock"))
    with pytest.raises(ServerError) as failure:
        docker.DockerServer("any-image").start()
    assert normalized(f"overlord-db: {failure.value}") in normalized(read("how-to/docker.md"))
    from pytest_overlord_db.plugin.app_fixtures import committed

    for message in (plugin_errors.SYNC_COMMITTED, plugin_errors.ASYNC_COMMITTED, committed("overlord_psycopg")):
        assert normalized(message) in normalized(read("reference/fixtures.md"))
