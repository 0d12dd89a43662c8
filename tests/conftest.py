"""Helpers for tests that run whole pytest sessions of a throwaway project in a subprocess."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def default_sigint(command: list[str]) -> list[str]:
    """``command`` with Ctrl-C acting as on a terminal. A run started in the background by a non-interactive
    shell (`cmd &`) has SIGINT ignored, and every child inherits that: a Python started so never sees Ctrl-C,
    and the tests that press it would measure the shell, not us. So the child resets it, then execs."""
    return [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
            "os.execv(sys.argv[1], sys.argv[1:])", *command]


@dataclass
class Project:
    """A user project on disk (migrations/, seeds/, yoyo.ini, tests) with its own embedded server."""

    root: Path
    datadir: Path
    env: dict[str, str] = field(default_factory=dict)

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def command(self, *args: str) -> list[str]:
        # Hypothesis' pytest plugin imports all of hypothesis for every run's summary (0.1 s of each inner run's
        # 0.8 s); no inner run uses it (the data generation uses hypothesis itself, which needs no plugin).
        return default_sigint([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                               *args])

    def environ(self) -> dict[str, str]:
        # CI and BUILD_NUMBER make pytest print whole messages in its short summary, GITHUB_* turns on our
        # annotations: the inner runs must read the same on a laptop and on a CI runner.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OVERLORD_", "PYTEST_", "GITHUB_")) and k not in ("CI", "BUILD_NUMBER")}
        env["OVERLORD_DATADIR"] = str(self.datadir)
        # The inner runs see no Docker engine unless a test gives them one (tests/test_docker.py): auto would
        # take an engine that answers. The default socket is hidden behind one that does not exist, at the cost
        # of a failed ping, only where there is one.
        env.pop("DOCKER_HOST", None)
        if os.path.exists("/var/run/docker.sock"):
            env["DOCKER_HOST"] = "unix:///nonexistent/overlord-inner-runs-have-no-docker.sock"
        env.update(self.env)
        return env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), cwd=self.root, env=self.environ(), capture_output=True, text=True, timeout=timeout
        )

    def result(self, *args: str, timeout: float = 120) -> pytest.RunResult:
        """A whole pytest run, as pytester's RunResult: ``assert_outcomes`` instead of matching strings."""
        started = time.monotonic()
        done = self.run(*args, timeout=timeout)
        return _RunResult(done.returncode, done.stdout.splitlines(), done.stderr.splitlines(), time.monotonic() - started)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args), cwd=self.root, env=self.environ(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def server_processes(self) -> list[int]:
        """pids of postgres servers running on this project's data directory."""
        import psutil

        found = []
        for proc in psutil.process_iter(["name", "cmdline"]):
            cmdline = proc.info.get("cmdline") or []
            if proc.info.get("name") == "postgres" and str(self.datadir) in " ".join(cmdline):
                found.append(proc.pid)
        return found


class _RunResult(pytest.RunResult):
    """pytester's RunResult, whose failed ``assert_outcomes`` shows the run's output (the bare
    AssertionError it raises names neither the outcomes nor why)."""

    def assert_outcomes(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().assert_outcomes(*args, **kwargs)
        except AssertionError:
            try:
                got: object = self.parseoutcomes()
            except ValueError:  # no summary line at all
                got = "none"
            raise AssertionError(f"outcomes {got}, expected {kwargs}; the run printed:\n" + "\n".join(
                self.outlines[-150:] + self.errlines[-50:])) from None


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A copy of our own migrations, seeds and yoyo.ini, plus a private data directory on RAM disk."""
    root = tmp_path / "userproject"
    root.mkdir()
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "seeds", root / "seeds")
    shutil.copy(REPO / "yoyo.ini", root / "yoyo.ini")
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path
    datadir = base / f"ovl-test-{uuid.uuid4().hex[:10]}"
    proj = Project(root=root, datadir=datadir)
    yield proj
    for pid in proj.server_processes():  # a test that failed half-way must not leave a server behind
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for leftover in base.glob(datadir.name + "*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@pytest.fixture
def empty_db_url(overlord_server):
    """An empty database of ours on the session's server (no migrations applied), dropped afterwards."""
    from pytest_overlord_db.config import resolve
    from pytest_overlord_db.servers.base import ServerFacts
    from pytest_overlord_db.template import Templates

    templates = Templates(overlord_server.admin_url, resolve(REPO), ServerFacts(overlord_server.version_num, overlord_server.version))
    name = templates.create_empty("fresh")
    try:
        yield templates.url(name)
    finally:
        templates.drop(name)
        templates.close()


@pytest.fixture
def app_project(tmp_path, monkeypatch):
    """The current directory is a copy of our project (migrations, seeds, yoyo.ini); no DATABASE_URL."""
    root = tmp_path / "app"
    root.mkdir()
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "seeds", root / "seeds")
    shutil.copy(REPO / "yoyo.ini", root / "yoyo.ini")
    monkeypatch.chdir(root)
    for var in ("DATABASE_URL", "OVERLORD_ENV", "OVERLORD_DB_URL"):
        monkeypatch.delenv(var, raising=False)
    return root


@pytest.fixture
def templates(overlord_server, tmp_path):
    """A database manager on the session's server, scoped to a throwaway project."""
    from pytest_overlord_db.config import Settings
    from pytest_overlord_db.servers.base import ServerFacts
    from pytest_overlord_db.template import Templates

    # The project is named by the whole path: pytest cuts tmp_path's name to 30 characters, so two
    # parametrized tests on two xdist workers can get the same folder name, and then see each other's databases.
    settings = Settings(root=tmp_path, migrations_dir=tmp_path / "migrations", seeds_dir=tmp_path / "seeds",
                        project=str(tmp_path))
    facts = ServerFacts(overlord_server.version_num, overlord_server.version)
    manager = Templates(overlord_server.admin_url, settings, facts)
    yield manager
    assert not [name for name, mark in manager.ours() if mark["kind"] == "roundtrip"], "a throwaway database was left"
    manager.close()


@pytest.fixture(autouse=True)
def _not_on_github(monkeypatch):
    """Tests that want GitHub's output set these themselves; on a real runner, none may write its summary."""
    for var in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_WORKSPACE"):
        monkeypatch.delenv(var, raising=False)
