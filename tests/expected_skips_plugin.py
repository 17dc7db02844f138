"""``--expected-skips FILE``: fail the run when the set of skipped tests differs from a committed list.

A test that skips because a system package is missing (chromium, SLURM) passes silently; CI passes
this option so that a skip appearing, or an expected one disappearing, fails the test stage and
names the tests. The file holds one node id per line; ``#`` starts a comment.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser):
    parser.addoption("--expected-skips", metavar="FILE", default=None,
                     help="fail if the skipped tests differ from the node ids listed in FILE")


SKIPPED = pytest.StashKey[set]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        item.config.stash.setdefault(SKIPPED, set()).add(report.nodeid)


def read_expected(path: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {line for line in lines if line}


def pytest_sessionfinish(session, exitstatus):
    path = session.config.getoption("--expected-skips")
    if not path:
        return
    tr = session.config.pluginmanager.get_plugin("terminalreporter")
    say = tr.write_line if tr else print
    if not Path(path).is_file():
        say(f"expected-skips: {path} not found; create it (one skipped test's node id per line, may be empty)")
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    skipped = session.config.stash.get(SKIPPED, set())
    expected = read_expected(Path(path))
    new, gone = sorted(skipped - expected), sorted(expected - skipped)
    if not (new or gone):
        return
    say(f"expected-skips: the skipped tests differ from {path}")
    for nodeid in new:
        say(f"  skipped, not expected: {nodeid}")
    for nodeid in gone:
        say(f"  expected to skip, did not: {nodeid}")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
