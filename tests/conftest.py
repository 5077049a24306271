"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (training tests: steady on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
