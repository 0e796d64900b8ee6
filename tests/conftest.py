import os
import random

import numpy as np
import pytest
import torch
from command_server import CommandServer

# Tests run on a fixed number of intra-op threads (default 2, the machine `make test` is sized for;
# SCAN_TEST_THREADS overrides it), so results and run times do not depend on the host's core count.
TEST_THREADS = max(1, min(int(os.environ.get("SCAN_TEST_THREADS", "2")), os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same seeds (torch, numpy, random) on TEST_THREADS threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TEST_THREADS)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def commands():
    """Runs ``python ARGV...`` as ``subprocess.run(capture_output=True)`` does, in a fork of a warm
    interpreter (tests/command_server.py): a process of its own, without seconds of imports."""
    server = CommandServer()
    yield server
    server.close()
