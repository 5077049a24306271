"""Shared fixtures, and the Triton interpreter switched on where there is no GPU.

``TRITON_INTERPRET`` is read when triton is first imported, and importing
plasticnet imports it (through ``torch.compiler``) where it is installed: it is
set here, before any test module imports plasticnet, so that the triton
engine's tests run its programs on CPU tensors.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (training tests: steady on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
