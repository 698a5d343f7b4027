"""The original discretisation against `sampling_reference.json` (ref §6.2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ccedit.schedulers import original_alphas_cumprod, original_sigmas, original_timesteps, quantize_sigma
from tests.conftest import REFERENCE, require


@pytest.fixture(scope="module")
def reference() -> dict:
    with open(require(REFERENCE / "sampling_reference.json")) as f:
        return json.load(f)


def test_sigma_table_is_bit_exact(reference):
    table = original_sigmas()
    assert table.dtype == torch.float32 and table.shape == (1000,)
    expected = torch.tensor(reference["denoiser_sigmas_idx0_to_999"], dtype=torch.float32)
    assert torch.equal(table, expected)
    alphas_cumprod = torch.tensor(reference["alphas_cumprod_float64"], dtype=torch.float64)
    assert torch.equal(original_alphas_cumprod(), alphas_cumprod)


def test_sigma_table_is_a_copy():
    original_sigmas()[0] = 123.0
    assert original_sigmas()[0] != 123.0


@pytest.mark.parametrize("num_steps", ["20", "30", "50"])
def test_timesteps_and_grid_sigmas(reference, num_steps):
    schedule = reference["sampler_schedules"][num_steps]
    timesteps = original_timesteps(int(num_steps))
    assert timesteps.dtype == torch.int64
    assert timesteps.tolist() == schedule["ddpm_timesteps_ascending"][::-1]
    grid = torch.cat([original_sigmas()[timesteps], torch.zeros(1)])
    assert torch.equal(grid, torch.tensor(schedule["sigmas_with_appended_zero"], dtype=torch.float32))


def test_timesteps_small_and_quirky_counts():
    assert original_timesteps(4).tolist() == [999, 749, 499, 249]
    assert original_timesteps(1).tolist() == [999]
    # 30 steps: 999, 965, ... where diffusers' "trailing" spacing would give 999, 966, ... (ref §5 item 18).
    assert original_timesteps(30)[:2].tolist() == [999, 965]
    assert original_timesteps(30)[-1].item() == 33
    # numpy's float64 linspace floors 99 steps differently from exact integer arithmetic; the original has it too.
    exact = [(999 * (99 - i)) // 99 for i in range(99)]
    expected = np.floor(np.linspace(999, 0, 99, endpoint=False)).astype(np.int64).tolist()
    assert original_timesteps(99).tolist() == expected != exact
    with pytest.raises(ValueError, match="num_inference_steps"):
        original_timesteps(0)


@pytest.mark.parametrize("num_steps", ["20", "30", "50"])
def test_quantisation_of_grid_and_midpoint_sigmas(reference, num_steps):
    for step in reference["sampler_schedules"][num_steps]["steps"]:
        index, sigma_q = quantize_sigma(step["sigma"])
        assert index.dtype == torch.int64
        assert index.item() == step["timestep_idx"]
        assert sigma_q.item() == step["sigma_quantized"]
        c_in = 1.0 / (sigma_q**2.0 + 1.0) ** 0.5
        assert c_in.item() == pytest.approx(step["c_in"], rel=1e-6)
        midpoint = step.get("dpmpp2s_midpoint")
        if midpoint is not None:
            index, sigma_q = quantize_sigma(torch.tensor(midpoint["sigma"]))
            assert (index.item(), sigma_q.item()) == (midpoint["timestep_idx"], midpoint["sigma_quantized"])


def test_quantize_takes_first_minimum_and_keeps_shape():
    table = torch.tensor([1.0, 2.0, 2.0, 3.0])
    index, sigma_q = quantize_sigma(2.0, table)
    assert index.item() == 1 and sigma_q.item() == 2.0
    index, sigma_q = quantize_sigma(torch.tensor([[1.4, 2.6], [0.0, 9.0]]), table)
    assert index.tolist() == [[0, 3], [0, 3]]
    assert sigma_q.shape == (2, 2)
