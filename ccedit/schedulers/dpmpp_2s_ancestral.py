"""DPM++(2S) ancestral sampling on the original CCEdit discretisation, as a diffusers scheduler.

The CCEdit release samples with DPM-Solver++(2S) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Algorithm 1 with r = 1/2, data prediction) combined with the ancestral split of each
step into a deterministic move to sigma_down and fresh noise of size sigma_up, as in k-diffusion's
`sample_dpmpp_2s_ancestral`. No diffusers scheduler implements this combination (ref §6.6), so this module does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .denoiser import DiscreteEpsDenoiser
from .sigmas import original_timesteps

logger = logging.getLogger(__name__)


@dataclass
class DPMPP2SAncestralSchedulerOutput(BaseOutput):
    """
    Output of [`DPMPP2SAncestralScheduler.step`].

    Args:
        prev_sample (`torch.Tensor` of the shape of the sample):
            The next model input: the midpoint sample x_2 after the first evaluation of a step, otherwise the latent
            at the next grid sigma.
        pred_original_sample (`torch.Tensor` of the shape of the sample):
            The denoised estimate D = x - sigma_q * eps of this evaluation.
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass(frozen=True)
class _StepPlan:
    """Scalars of one sampler step from sigma to next_sigma, all float32 0-d tensors (the original's dtypes)."""

    sigma: torch.Tensor
    next_sigma: torch.Tensor
    sigma_down: torch.Tensor
    sigma_up: torch.Tensor
    # Log-space coefficients, only when sigma_down > 0: x2 = mid_scale * x - mid_expm1 * D1 and
    # x' = down_scale * x - down_expm1 * D2 (ref §6.4 step 4).
    mid_sigma: torch.Tensor | None = None
    mid_scale: torch.Tensor | None = None
    mid_expm1: torch.Tensor | None = None
    down_scale: torch.Tensor | None = None
    down_expm1: torch.Tensor | None = None

    @property
    def has_midpoint(self) -> bool:
        return self.mid_sigma is not None


class DPMPP2SAncestralScheduler(SchedulerMixin, ConfigMixin):
    """
    DPM-Solver++(2S) with ancestral noise (Lu et al. 2022; ancestral split as in k-diffusion), exactly as the original
    CCEdit sampler runs it on the Stable Diffusion 1.5 sigma table (ref §3 "Samplers", §6.2, §6.4).

    One step from sigma to sigma' works in sigma space (x = x0 + sigma * eps):

    1. sigma_up = min(sigma', eta * sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)),
       sigma_down = sqrt(sigma'^2 - sigma_up^2).
    2. D1 = D(x, sigma). If sigma_down = 0 (the last step), x' = x + (sigma_down - sigma) (x - D1) / sigma.
    3. Otherwise, with lambda = -log sigma, h = lambda(sigma_down) - lambda(sigma) and the log-midpoint sigma_m:
       x2 = (sigma_m / sigma) x - expm1(-h/2) D1, D2 = D(x2, sigma_m), x' = (sigma_down / sigma) x - expm1(-h) D2.
    4. One N(0, I) draw n per step, also in the last step where it is discarded; x' += n * s_noise * sigma_up.

    D(x, sigma) quantises sigma to the nearest table entry sigma_q, feeds the network c_in * x with
    c_in = 1 / sqrt(sigma_q^2 + 1) and the integer table index as timestep, and returns x - sigma_q * eps. The solver
    itself uses the un-quantised sigmas. With eta = 1 the midpoint sigma_m equals the next grid sigma up to rounding,
    so the second evaluation of a step runs at the next grid timestep.

    The scheduler fits the generic diffusers loop (`scale_model_input`, model, `step`) without special casing: like
    diffusers' KDPM2 and Heun schedulers, `timesteps` lists every network evaluation, two per step except in the last
    one, so n steps make 2n - 1 calls. For 4 steps the network sees 999, 749, 749, 499, 499, 249, 249.

    Note that `init_noise_sigma` is sqrt(1 + sigma_max^2), CCEdit's initial scale (ref §5 item 16), not sigma_max.

    Args:
        num_train_timesteps (`int`, defaults to 1000): number of DDPM training timesteps (size of the sigma table).
        beta_start (`float`, defaults to 0.00085): first beta of the schedule.
        beta_end (`float`, defaults to 0.012): last beta of the schedule.
        beta_schedule (`str`, defaults to `"scaled_linear"`): only `"scaled_linear"` is supported.
        prediction_type (`str`, defaults to `"epsilon"`): only `"epsilon"` is supported.
        eta (`float`, defaults to 1.0): ancestral noise fraction; 0 gives deterministic DPM-Solver++(2S).
        s_noise (`float`, defaults to 1.0): multiplier of each noise draw.
    """

    order = 2

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: str = "epsilon",
        eta: float = 1.0,
        s_noise: float = 1.0,
    ) -> None:
        if beta_schedule != "scaled_linear":
            raise ValueError(
                f"`beta_schedule` must be 'scaled_linear' (the original CCEdit table), got {beta_schedule!r}."
            )
        if prediction_type != "epsilon":
            raise ValueError(f"`prediction_type` must be 'epsilon' (CCEdit predicts noise), got {prediction_type!r}.")
        if eta < 0:
            raise ValueError(f"`eta` must be >= 0, got {eta}.")

        self.denoiser = DiscreteEpsDenoiser(num_train_timesteps, beta_start, beta_end)
        self.sigma_table = self.denoiser.sigmas  # (T,) float32, by timestep
        self.num_inference_steps: int | None = None
        self.timesteps = torch.empty(0, dtype=torch.int64)
        # Until `set_timesteps`: just sigma_max and 0, so that sigma_max is already right (every schedule starts there).
        self.sigmas = torch.cat([self.sigma_table[-1:], torch.zeros(1)])
        self.solver_steps = torch.empty(0, dtype=torch.int64)
        self._plans: list[_StepPlan] = []
        self._sigmas_quantized = torch.empty(0, dtype=torch.float32)
        self._c_in = torch.empty(0, dtype=torch.float32)
        self._is_first_stage: list[bool] = []
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self._step_start_sample: torch.Tensor | None = None

    @property
    def init_noise_sigma(self) -> float:
        """sqrt(1 + sigma_max^2), the original's initial scale; the schedule always starts at the table's top."""
        sigma_max = self.sigma_table[-1]
        return float(torch.sqrt(1.0 + sigma_max**2.0))

    @property
    def denoising_sigmas(self) -> torch.Tensor:
        """Per evaluation, the sigma of its denoised estimate D = x - sigma * eps (the table's nearest sigma)."""
        return self._sigmas_quantized

    @property
    def step_index(self) -> int | None:
        """Position in `timesteps` of the next evaluation; `None` until the first `scale_model_input` or `step`."""
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        """Position in `timesteps` of the first evaluation, set by the pipeline with `set_begin_index`."""
        return self._begin_index

    @property
    def state_in_first_order(self) -> bool:
        """Whether the next evaluation is the first one of a step, at the step's grid sigma."""
        index = 0 if self._step_index is None else self._step_index
        return index >= len(self._is_first_stage) or self._is_first_stage[index]

    @property
    def sigma_down(self) -> torch.Tensor:
        """The ancestral sigma_down of every step, float32, shape `(num_inference_steps,)`."""
        return torch.stack([plan.sigma_down for plan in self._plans])

    @property
    def sigma_up(self) -> torch.Tensor:
        """The ancestral sigma_up of every step, float32, shape `(num_inference_steps,)`."""
        return torch.stack([plan.sigma_up for plan in self._plans])

    def set_begin_index(self, begin_index: int = 0) -> None:
        """
        Start at position `begin_index` of `timesteps` (img2img and SDEdit); it must be the first evaluation of a step.

        Args:
            begin_index (`int`, defaults to 0): position in `timesteps`; `step * order` for a step index.
        """
        if not 0 <= begin_index < len(self.timesteps) or not self._is_first_stage[begin_index]:
            raise ValueError(
                f"`begin_index` must point at the first evaluation of a step (0, 2, 4, ...), got {begin_index}."
            )
        self._begin_index = begin_index

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """
        Build the schedule for `num_inference_steps` sampler steps.

        The grid is the original's: timesteps floor(linspace(999, 0, n, endpoint=False)), their table sigmas and a
        final 0 (ref §6.2). Each step contributes its grid timestep and, unless sigma_down = 0, the quantised timestep
        of its log-midpoint; `sigmas` holds the matching un-quantised sigma of every evaluation and a final 0.

        Args:
            num_inference_steps (`int`): number of sampler steps n; the network is called 2n - 1 times (eta > 0).
            device (`str` or `torch.device`, *optional*): where to put `timesteps`.
        """
        grid_timesteps = original_timesteps(num_inference_steps, self.config.num_train_timesteps)
        grid_sigmas = torch.cat([self.sigma_table[grid_timesteps], torch.zeros(1)])  # (n + 1,) float32

        timesteps: list[torch.Tensor] = []
        eval_sigmas: list[torch.Tensor] = []
        eval_sigmas_quantized: list[torch.Tensor] = []
        solver_steps: list[int] = []
        is_first_stage: list[bool] = []
        plans: list[_StepPlan] = []
        for i in range(num_inference_steps):
            plan = self._plan_step(grid_sigmas[i], grid_sigmas[i + 1])
            plans.append(plan)
            # Grid sigmas are table entries, so the first evaluation quantises to its own timestep exactly.
            timesteps.append(grid_timesteps[i])
            eval_sigmas.append(plan.sigma)
            eval_sigmas_quantized.append(plan.sigma)
            solver_steps.append(i)
            is_first_stage.append(True)
            if plan.has_midpoint:
                mid_index, mid_sigma_quantized = self.denoiser.quantize(plan.mid_sigma)
                timesteps.append(mid_index)
                eval_sigmas.append(plan.mid_sigma)
                eval_sigmas_quantized.append(mid_sigma_quantized)
                solver_steps.append(i)
                is_first_stage.append(False)

        sigmas_quantized = torch.stack(eval_sigmas_quantized)
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.stack(timesteps).to(device=device, dtype=torch.int64)
        self.sigmas = torch.cat([torch.stack(eval_sigmas), torch.zeros(1)])
        self.solver_steps = torch.tensor(solver_steps, dtype=torch.int64)
        self._plans = plans
        self._sigmas_quantized = sigmas_quantized
        # The reciprocal first, then a multiply in scale_model_input, as the original's EpsScaling does.
        self._c_in = self.denoiser.c_in(sigmas_quantized)
        self._is_first_stage = is_first_stage
        self._step_index = None
        self._begin_index = None
        self._step_start_sample = None
        logger.debug("DPM++(2S) ancestral timesteps for %d steps: %s", num_inference_steps, self.timesteps.tolist())

    def _plan_step(self, sigma: torch.Tensor, next_sigma: torch.Tensor) -> _StepPlan:
        """Ancestral split and log-space coefficients of one step, in the original's float32 operation order."""
        eta = self.config.eta
        if eta == 0:
            sigma_down, sigma_up = next_sigma, torch.zeros_like(next_sigma)
        else:
            sigma_up = torch.minimum(next_sigma, eta * (next_sigma**2 * (sigma**2 - next_sigma**2) / sigma**2) ** 0.5)
            sigma_down = (next_sigma**2 - sigma_up**2) ** 0.5
        if sigma_down == 0:
            return _StepPlan(sigma=sigma, next_sigma=next_sigma, sigma_down=sigma_down, sigma_up=sigma_up)

        # Work in lambda = -log(sigma) and map back with exp; the round trip changes sigma and sigma_down in the last
        # bit, and the original uses the round-tripped values (ref §6.4 step 4).
        lambda_start, lambda_end = sigma.log().neg(), sigma_down.log().neg()
        h = lambda_end - lambda_start
        lambda_mid = lambda_start + 0.5 * h
        sigma_start, sigma_mid, sigma_end = (lam.neg().exp() for lam in (lambda_start, lambda_mid, lambda_end))
        return _StepPlan(
            sigma=sigma,
            next_sigma=next_sigma,
            sigma_down=sigma_down,
            sigma_up=sigma_up,
            mid_sigma=sigma_mid,
            mid_scale=sigma_mid / sigma_start,
            mid_expm1=(-0.5 * h).expm1(),
            down_scale=sigma_end / sigma_start,
            down_expm1=(-h).expm1(),
        )

    def index_for_timestep(self, timestep: int | torch.Tensor) -> int:
        """Position of the first step that *starts* at `timestep` (a midpoint may share the value; it is skipped)."""
        matches = [
            index
            for index, (t, first) in enumerate(zip(self.timesteps.tolist(), self._is_first_stage))
            if first and t == int(timestep)
        ]
        if not matches:
            raise ValueError(
                f"timestep {int(timestep)} does not start a step of the schedule {self.timesteps.tolist()}."
            )
        return matches[0]

    def _init_step_index(self, timestep: int | torch.Tensor) -> None:
        self._step_index = self.index_for_timestep(timestep) if self._begin_index is None else self._begin_index

    def _check_ready(self) -> None:
        if self.num_inference_steps is None:
            raise ValueError("Call `set_timesteps` before sampling with DPMPP2SAncestralScheduler.")

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        """
        Scale the network input by c_in = 1 / sqrt(sigma_q^2 + 1) of the current evaluation's quantised sigma.

        Args:
            sample (`torch.Tensor`): the latent, or the CFG batch `[x; x]`, at the current evaluation.
            timestep (`int` or `torch.Tensor`, *optional*): the current entry of `timesteps`; used only to find the
                position when the loop starts without `set_begin_index`.

        Returns:
            `torch.Tensor`: `sample * c_in`.
        """
        self._check_ready()
        if self._step_index is None:
            self._init_step_index(timestep)
        return sample * self._c_in[self._step_index].to(sample.device)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> DPMPP2SAncestralSchedulerOutput | tuple[torch.Tensor, torch.Tensor]:
        """
        Advance by one network evaluation: to the midpoint after a step's first one, to the next grid sigma after its
        last one (ref §6.4).

        Args:
            model_output (`torch.Tensor`): the (guided) noise prediction eps at `sample`.
            timestep (`int` or `torch.Tensor`): the current entry of `timesteps`.
            sample (`torch.Tensor`): the latent the network saw, before `scale_model_input`.
            generator (`torch.Generator`, *optional*): source of the step's N(0, I) draw when `noise` is not given.
            noise (`torch.Tensor`, *optional*): the step's N(0, I) draw, shaped like `sample`, for replaying a run. It
                is consumed by the evaluation that completes a step and ignored by a first evaluation.
            return_dict (`bool`, defaults to `True`): return a [`DPMPP2SAncestralSchedulerOutput`] or a tuple.

        Returns:
            [`DPMPP2SAncestralSchedulerOutput`] or `tuple`: `(prev_sample, pred_original_sample)` as a tuple.
        """
        self._check_ready()
        if self._step_index is None:
            self._init_step_index(timestep)
        index = self._step_index
        if index >= len(self.timesteps):
            raise ValueError(
                f"`step` was called {index + 1} times but the schedule has {len(self.timesteps)} evaluations; "
                "call `set_timesteps` again before a new sampling run."
            )
        plan = self._plans[int(self.solver_steps[index])]
        # float32 arithmetic regardless of the network's dtype, as the original sampler keeps x in float32.
        x = sample.to(torch.float32)
        sigma_quantized = self._sigmas_quantized[index].to(x.device)
        denoised = self.denoiser.denoised(model_output, x, sigma_quantized)

        if self._is_first_stage[index] and plan.has_midpoint:
            # First evaluation of a 2S step: move to the log-midpoint, where the next call evaluates D2.
            self._step_start_sample = x
            prev_sample = plan.mid_scale.to(x.device) * x - plan.mid_expm1.to(x.device) * denoised
        else:
            if self._is_first_stage[index]:
                # sigma_down = 0: a plain Euler step to sigma_down, which is 0 here.
                sigma = plan.sigma.to(x.device)
                prev_sample = x + (plan.sigma_down.to(x.device) - sigma) * ((x - denoised) / sigma)
            else:
                start = self._step_start_sample
                prev_sample = plan.down_scale.to(x.device) * start - plan.down_expm1.to(x.device) * denoised
                self._step_start_sample = None
            prev_sample = self._add_ancestral_noise(prev_sample, plan, generator, noise)

        self._step_index += 1
        prev_sample = prev_sample.to(sample.dtype)
        if not return_dict:
            return prev_sample, denoised
        return DPMPP2SAncestralSchedulerOutput(prev_sample=prev_sample, pred_original_sample=denoised)

    def _add_ancestral_noise(
        self, x: torch.Tensor, plan: _StepPlan, generator: torch.Generator | None, noise: torch.Tensor | None
    ) -> torch.Tensor:
        """Draw once per step, also in the last one where sigma' = 0 discards it, so the random stream stays aligned."""
        if noise is None:
            noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=torch.float32)
        elif noise.shape != x.shape:
            raise ValueError(f"`noise` must have the shape of the sample {tuple(x.shape)}, got {tuple(noise.shape)}.")
        if plan.next_sigma > 0:
            x = x + noise.to(device=x.device, dtype=torch.float32) * self.config.s_noise * plan.sigma_up.to(x.device)
        return x

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
    ) -> torch.Tensor:
        """
        Noise clean samples to the grid sigma of the steps starting at `timesteps`: x = x0 + sigma * noise.

        Args:
            original_samples (`torch.Tensor`): clean latents, batch first.
            noise (`torch.Tensor`): N(0, I) of the same shape.
            timesteps (`torch.Tensor`): one grid timestep, or one per batch row.

        Returns:
            `torch.Tensor`: the noised latents.
        """
        self._check_ready()
        timesteps = torch.as_tensor(timesteps).reshape(-1)
        sigmas = torch.stack([self.sigmas[self.index_for_timestep(t)] for t in timesteps])
        if len(sigmas) == 1:
            sigmas = sigmas.expand(original_samples.shape[0])
        sigmas = sigmas.to(device=original_samples.device, dtype=original_samples.dtype)
        return original_samples + noise * sigmas.reshape(-1, *([1] * (original_samples.ndim - 1)))

    def __len__(self) -> int:
        return self.config.num_train_timesteps
