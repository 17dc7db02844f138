"""CI's skip check: a skip that appears, or an expected skip that no longer happens, fails the run."""

from __future__ import annotations

from tests import expected_skips_plugin

pytest_plugins = ["pytester"]

INNER = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no chromium on PATH")

@pytest.mark.xfail(reason="an expected failure is not a skip")
def test_xfails():
    assert False
"""


def run_inner(pytester, *args):
    pytester.makepyfile(test_inner=INNER)
    return pytester.runpytest(*args, plugins=[expected_skips_plugin])


def with_list(pytester, text):
    path = pytester.path / "expected.txt"
    path.write_text(text)
    return run_inner(pytester, "--expected-skips", str(path))


def test_the_listed_skip_passes(pytester):
    result = with_list(pytester, "# comment\ntest_inner.py::test_skips   # chromium\n")
    assert result.ret == 0
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)


def test_an_unlisted_skip_fails_the_run_and_is_named(pytester):
    result = with_list(pytester, "")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skipped, not expected: test_inner.py::test_skips"])


def test_a_listed_test_that_ran_fails_the_run_and_is_named(pytester):
    result = with_list(pytester, "test_inner.py::test_skips\ntest_inner.py::test_runs\n")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*expected to skip, did not: test_inner.py::test_runs"])


def test_without_the_option_a_skip_passes_as_before(pytester):
    assert run_inner(pytester).ret == 0


def test_a_missing_list_is_a_usage_error_naming_the_file(pytester):
    result = run_inner(pytester, "--expected-skips", "nope.txt")
    assert result.ret == 4
    result.stdout.fnmatch_lines(["*nope.txt not found*"])
