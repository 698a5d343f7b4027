"""ccedit's denoising loop and network reproduce complete runs of the original samplers (every step's latent)."""

import pytest

from ccedit.parity import check_fixture
from tests.conftest import REFERENCE, require


@pytest.mark.parametrize("name", ["sampling_tv2v_euler", "sampling_tvi2v_dpmpp2sa", "sampling_tvi2v_prior"])
def test_sampling_fixture_parity(name):
    result = check_fixture(require(REFERENCE / f"{name}.safetensors"))
    assert result.passed, result.details
    assert {"x.0", "x.1", "x.2", "x.3", "final"} == set(result.details)
    assert result.max_abs_err <= 5e-4
