"""Session start on the Docker backend, cold (a new container) and warm (a reused one, its template cached),
next to the embedded server's, as the plugin reports it (``overlord_server.start_seconds``: server up,
checked, template found or built) and as the wall time of a one-test pytest run.

Needs an engine and an image: scripts/docker-engine.sh, then ``. /var/tmp/overlord-docker/env.sh``.
Host networking (the engine may have no bridge). Leaves no container behind.

    python bench/bench_docker.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST = '''
def test_start(overlord_server):
    print("START", overlord_server.start_seconds, "REUSED", overlord_server.template_reused, "BACKEND", overlord_server.backend)
'''


def run(root: Path, env: dict[str, str], *flags: str) -> tuple[float, float, bool]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *flags, "test_start.py"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    wall = time.perf_counter() - started
    found = re.search(r"START (\S+) REUSED (\w+) BACKEND (\w+)", done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"the run failed:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1)), wall, found.group(2) == "True"


def line(name: str, samples: list[tuple[float, float, bool]]) -> str:
    plugin = [s[0] for s in samples]
    wall = [s[1] for s in samples]
    reused = {s[2] for s in samples}
    return (f"| {name} | {statistics.median(plugin):.2f} s ({min(plugin):.2f}–{max(plugin):.2f}) | "
            f"{statistics.median(wall):.2f} s | {'reused' if reused == {True} else 'built'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    engine = os.environ.get("OVERLORD_TEST_DOCKER_HOST") or os.environ.get("DOCKER_HOST")
    image = os.environ.get("OVERLORD_TEST_DOCKER_IMAGE") or os.environ.get("OVERLORD_IMAGE")
    if not engine or not image:
        raise SystemExit("no engine: run scripts/docker-engine.sh and source its env.sh (or set DOCKER_HOST and OVERLORD_IMAGE)")
    work = Path(tempfile.mkdtemp(prefix="ovl-bench-docker-"))
    root = work / "project"
    root.mkdir()
    shutil.copytree(REPO / "migrations", root / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "yoyo.ini", root / "yoyo.ini")
    (root / "test_start.py").write_text(TEST)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OVERLORD_", "PYTEST_"))}
    docker = {**base, "DOCKER_HOST": engine, "OVERLORD_BACKEND": "docker", "OVERLORD_IMAGE": image,
              "OVERLORD_DOCKER_NETWORK": "host", "OVERLORD_DATADIR": str(work / "docker")}
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    embedded = {**base, "OVERLORD_BACKEND": "embedded"}
    rows = []
    try:
        rows.append(line("docker, cold: a new container (initdb in it, start, five migrations, template)",
                         [run(root, docker) for _ in range(args.repeat)]))
        run(root, docker, "--overlord-reuse-container")  # the container and template the warm runs find
        rows.append(line("docker, warm: `--overlord-reuse-container`, template cached in it",
                         [run(root, docker, "--overlord-reuse-container") for _ in range(args.repeat)]))
        run(root, docker)  # replaces the kept container and removes it at the end
        cold = []
        for i in range(args.repeat):
            cold.append(run(root, {**embedded, "OVERLORD_DATADIR": str(shm / f"{work.name}-cold{i}")}))
        rows.append(line("embedded, cold: a new data directory", cold))
        warm_env = {**embedded, "OVERLORD_DATADIR": str(shm / f"{work.name}-warm")}
        run(root, warm_env)
        rows.append(line("embedded, warm: data directory kept", [run(root, warm_env) for _ in range(args.repeat)]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in shm.glob(f"{work.name}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    print(f"session start, median of {args.repeat} (range); the plugin's share, and a one-test run's wall time")
    print("| session start | plugin | wall | template |\n|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
