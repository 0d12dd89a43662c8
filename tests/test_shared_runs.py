"""Acceptance of issue 11: seven CI runners and a last run on one server, two branches, two runners SIGKILLed.

Slow (about 20-30 s on 2 cores: eight pytest processes), hence the mark; bench/bench_shared.py prints the
same figures.
"""
from __future__ import annotations

import pytest
from shared_scenario import run_scenario

from pytest_overlord_db.servers.embedded import EmbeddedServer

pytestmark = pytest.mark.slow


def test_runners_of_two_branches_share_one_server(project, tmp_path):
    server = EmbeddedServer(project.datadir)  # a server of its own, reached by URL like a CI service container
    url = server.start()
    try:
        figures = run_scenario(tmp_path / "runners", url)
    finally:
        server.stop()
    assert not figures.failed, "\n\n".join(figures.failed)
    assert (figures.runs, figures.killed, figures.passed) == (7, 2, 5)
    [template_a], [template_b] = figures.templates_by_branch["a"], figures.templates_by_branch["b"]
    assert template_a != template_b  # one template per migration set, whatever the checkout path
    assert figures.builds == {template_a: 1, template_b: 1}  # each built once, by one runner
    assert figures.tokens == 6  # every runner's databases had names of their own
    # The last run swept what the killed runners left, while B's runners still ran, and dropped the
    # template nobody used; B's, in use, stayed.
    assert figures.victims_left_at_kill >= 2 and figures.victims_left_after_final == []
    assert figures.templates_after_final == {template_a, template_b}
    assert figures.old_template not in figures.templates_after_final
    assert figures.leftovers_at_end == [] and figures.templates_at_end == {template_a, template_b}
    assert figures.user_databases_intact
