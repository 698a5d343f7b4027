"""Flow warping error (Lai et al., ECCV 2018): how much the edited clip moves differently from its source.

Flow comes from the source clip (torchvision's RAFT, forward and backward), pixels failing the forward-backward
check or lying on motion boundaries are masked out, edited frame t+1 is warped onto frame t with the forward flow,
and the mean squared RGB difference over the remaining pixels is averaged over the clip's T-1 pairs. Lower is better.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ccedit.errors import InvalidInputError
from ccedit.metrics.base import EditSample, Metric, fit_image
from ccedit.metrics.loading import check_raft, load_raft

logger = logging.getLogger(__name__)

# The reference resizes frames up to multiples of 64 before the flow network (FlowNet2's requirement); RAFT needs
# multiples of 8, which 64 satisfies, so the same protocol is kept; its 4-level correlation pyramid also needs
# sides of at least 128.
FLOW_SIZE_MULTIPLE = 64
FLOW_MIN_SIDE = 128


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample `image` at `x + flow(x)`, bilinearly, clamping at the border (the reference's `Resample2d` layer).

    Args:
        image (`torch.Tensor` of shape `(batch, channels, height, width)`).
        flow (`torch.Tensor` of shape `(batch, 2, height, width)`): Displacements in pixels, `(dx, dy)`.
    """
    _, _, height, width = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=flow.dtype, device=flow.device),
        torch.arange(width, dtype=flow.dtype, device=flow.device),
        indexing="ij",
    )
    x = xs + flow[:, 0]  # (batch, height, width)
    y = ys + flow[:, 1]
    # grid_sample wants coordinates in [-1, 1]; with align_corners=True, -1 and 1 are the centres of the edge pixels.
    grid = torch.stack([2 * x / max(width - 1, 1) - 1, 2 * y / max(height - 1, 1) - 1], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def occlusion_mask(flow_forward: torch.Tensor, flow_backward: torch.Tensor) -> torch.Tensor:
    """Pixels of frame t that the forward flow cannot be trusted for (Lai et al., after Ruder et al., GCPR 2016).

    Written here because no maintained library ships this test. A pixel is occluded when the backward flow, sampled
    where the forward flow lands, does not cancel the forward flow,
    `|F_fw + F_bw(x + F_fw)|^2 > 0.01 (|F_fw|^2 + |F_bw(x + F_fw)|^2) + 0.5`,
    or when it lies on a motion boundary, `|grad F_fw|^2 > 0.01 |F_fw|^2 + 0.002`, with forward differences that are
    zero in the last row and column, as in the reference.

    Args:
        flow_forward (`torch.Tensor` of shape `(batch, 2, height, width)`): F(t -> t+1) in pixels.
        flow_backward (`torch.Tensor` of shape `(batch, 2, height, width)`): F(t+1 -> t) in pixels.

    Returns:
        `torch.Tensor` of shape `(batch, height, width)`, `bool`: True where occluded.
    """
    backward_at_target = backward_warp(flow_backward, flow_forward)
    round_trip = ((flow_forward + backward_at_target) ** 2).sum(dim=1)
    magnitudes = (flow_forward**2).sum(dim=1) + (backward_at_target**2).sum(dim=1)
    inconsistent = round_trip > 0.01 * magnitudes + 0.5

    du = torch.zeros_like(flow_forward)
    dv = torch.zeros_like(flow_forward)
    du[..., :, :-1] = flow_forward[..., :, :-1] - flow_forward[..., :, 1:]
    dv[..., :-1, :] = flow_forward[..., :-1, :] - flow_forward[..., 1:, :]
    gradient = (du**2 + dv**2).sum(dim=1)
    boundary = gradient > 0.01 * (flow_forward**2).sum(dim=1) + 0.002
    return inconsistent | boundary


def warp_error(frames: torch.Tensor, flow_forward: torch.Tensor, flow_backward: torch.Tensor) -> float:
    """Flow warping error of a clip given the source clip's flows (Lai et al., ECCV 2018, eq. 9).

    For each pair, edited frame t+1 is warped onto frame t with F(t -> t+1); the squared difference with frame t is
    summed over non-occluded pixels and channels and divided by their count (all entries if every pixel is
    occluded, as in the reference); pairs are averaged.

    Args:
        frames (`torch.Tensor` of shape `(frames, 3, height, width)`): The edited clip, RGB in `[0, 1]`.
        flow_forward, flow_backward (`torch.Tensor` of shape `(frames - 1, 2, height, width)`): Source flows
            F(t -> t+1) and F(t+1 -> t), in pixels at the frames' size.
    """
    if len(frames) < 2:
        raise InvalidInputError("warp error compares consecutive frames: the clip needs at least 2 frames")
    expected = (len(frames) - 1, 2, *frames.shape[2:])
    for name, flow in (("flow_forward", flow_forward), ("flow_backward", flow_backward)):
        if tuple(flow.shape) != expected:
            raise InvalidInputError(f"`{name}` must have shape {expected}, got {tuple(flow.shape)}")
    visible = (~occlusion_mask(flow_forward, flow_backward)).unsqueeze(1).to(frames.dtype)  # (t-1, 1, h, w)
    warped = backward_warp(frames[1:], flow_forward)
    squared = (warped - frames[:-1]) ** 2 * visible
    count = visible.sum(dim=(1, 2, 3)) * frames.shape[1]  # non-occluded pixels x channels
    if (count == 0).any():
        # The reference then divides by all entries, so such a pair adds 0; say so, since it hides untrusted flow.
        fully_occluded = int((count == 0).sum())
        logger.warning("every pixel of %d frame pair(s) failed the occlusion test: they count as 0", fully_occluded)
    count = torch.where(count > 0, count, torch.full_like(count, squared[0].numel()))
    return (squared.sum(dim=(1, 2, 3)) / count).mean().item()


class RaftFlow:
    """Optical flow between frame pairs with a torchvision RAFT, at the frames' own size.

    Frames are resized up to multiples of 64 (at least 128) for the network, and the flow is resized back and
    rescaled, as the reference does for its flow network.
    """

    def __init__(self, model: torch.nn.Module, num_flow_updates: int, device: torch.device, batch_size: int):
        self.model = model.to(device).eval()
        self.num_flow_updates, self.device, self.batch_size = num_flow_updates, device, batch_size

    def __call__(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """F(first -> second) `(n, 2, height, width)` in pixels, for RGB frames `(n, 3, height, width)` in `[0, 1]`."""
        height, width = first.shape[2:]
        net_h, net_w = (max(FLOW_MIN_SIDE, math.ceil(side / FLOW_SIZE_MULTIPLE) * FLOW_SIZE_MULTIPLE)
                        for side in (height, width))
        flows = []
        for start in range(0, len(first), self.batch_size):
            pair = [x[start:start + self.batch_size].to(self.device) for x in (first, second)]
            # torchvision's optical-flow preset: float in [0, 1] -> [-1, 1].
            pair = [F.interpolate(x, size=(net_h, net_w), mode="bilinear", align_corners=False) * 2 - 1 for x in pair]
            flow = self.model(pair[0], pair[1], num_flow_updates=self.num_flow_updates)[-1]  # last refinement
            flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
            flows.append(flow * torch.tensor([width / net_w, height / net_h], device=flow.device).view(1, 2, 1, 1))
        return torch.cat(flows).float().cpu()


class FlowWarpError(Metric):
    """Flow warping error of the edited clip with RAFT flow and occlusion masks from the source clip; lower is better.

    Both clips are scored at the edited frames' size (the source is resized to it).

    Args:
        model (`str`, defaults to `"raft_large"`): `raft_large` / `raft_small` (torchvision's released weights),
            `"tiny"` (random `raft_small`, for tests) or a folder written by `ccedit.metrics.raft_folder.save_raft`.
        num_flow_updates (`int`, defaults to 20): RAFT refinement iterations (RAVE's evaluation uses 20).
        device (`str`, defaults to `"cpu"`), batch_size (`int`, defaults to 16): frame pairs per RAFT pass.
    """

    name = "warp_error"
    higher_is_better = False
    requires = ("source_frames",)

    def __init__(self, model: str = "raft_large", num_flow_updates: int = 20, device: str = "cpu",
                 batch_size: int = 16):
        super().__init__(device=device, batch_size=batch_size)
        self.model_reference = check_raft(model, metric=self.name, option="model")
        self.num_flow_updates = num_flow_updates
        self._flow = None

    @property
    def flow(self) -> RaftFlow:
        if self._flow is None:
            model = load_raft(self.model_reference, metric=self.name, option="model")
            self._flow = RaftFlow(model, self.num_flow_updates, self.device, self.batch_size)
        return self._flow

    def prepare(self) -> None:
        self.flow  # noqa: B018 - loading is the point

    def _score(self, sample: EditSample) -> float:
        if len(sample.frames) < 2:
            raise InvalidInputError(f"metric {self.name!r} compares consecutive frames: the clip needs at least 2")
        height, width = sample.frames.shape[1:3]
        source = _to_tensor(np.stack([fit_image(f, height, width) for f in sample.source_frames]))
        edited = _to_tensor(sample.frames)
        flow_forward = self.flow(source[:-1], source[1:])
        flow_backward = self.flow(source[1:], source[:-1])
        return warp_error(edited, flow_forward, flow_backward)

    def _record(self) -> dict[str, Any]:
        return {
            "backbone": f"torchvision RAFT ({self.model_reference}), {self.num_flow_updates} flow updates",
            "scale": "mean squared RGB error in [0, 1] over non-occluded pixels (papers often print x1e3 or x1e4)",
            "pairing": "consecutive pairs: edited t+1 warped onto t with source flow F(t->t+1), mean over T-1 pairs",
            "occlusion_mask": "forward-backward check + motion boundaries (Lai et al. 2018)",
            "resolution": "the edited frames' size (source resized to it); flow computed at multiples of 64",
            "precision": "float32",
        }


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 `(frames, height, width, 3)` -> float32 `(frames, 3, height, width)` in `[0, 1]`."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
