import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # tiny tensors: a second intra-op thread only adds contention on a shared 2-core machine (100x slower under load)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
