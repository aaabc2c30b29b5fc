"""Shared fixtures: every test starts from the same random state and with grad mode on."""

import numpy as np
import pytest

import forgeml as fm


@pytest.fixture(autouse=True)
def _fresh_state():
    fm.manual_seed(0)
    with fm.enable_grad():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
