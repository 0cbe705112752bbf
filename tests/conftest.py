import os
import secrets
import tempfile

import pytest

# Default builds keep the records they carry over in a cache folder: the tests' own, never the user's.
os.environ["CONVTVM_CACHE"] = tempfile.mkdtemp(prefix="convtvm-test-cache-")

from convtvm.metrics import rel_err  # noqa: E402,F401 - the tests' error metric is convtvm's own

# Fresh random inputs on every run; the seed is printed so a failure can be replayed.
SEED = int(os.environ.get("CONVTVM_TEST_SEED", secrets.randbelow(1 << 31)))


def pytest_report_header(config):
    return f"convtvm test seed: {SEED} (set CONVTVM_TEST_SEED to replay)"


def pytest_sessionstart(session):
    """The seed, also under -q (which hides the header): a failure in CI must be replayable."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and session.config.get_verbosity() < 0:
        reporter.write_line(f"convtvm test seed: {SEED} (set CONVTVM_TEST_SEED to replay)")


@pytest.fixture
def seed():
    return SEED
