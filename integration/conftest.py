"""Fixtures for tests that build real hosts out of network namespaces."""

from __future__ import annotations

import pytest

from integration.envcheck import require_root
from integration.testbed import Testbed


@pytest.fixture
def testbed(request):
    """A fresh `Testbed`, removed after the test whatever its outcome."""
    require_root()
    with Testbed(tag=request.node.name.replace("test_", "")[:4]) as tb:
        yield tb
