"""`Annotator.release()`: an accelerator annotator's networks wait on the CPU between clips and come back to run."""

from __future__ import annotations

import numpy as np
import torch

from ccedit.annotators import Annotator
from ccedit.config import load_edit_config
from ccedit.editing import EditSession

# Never allocated on: the recording annotator only notes where its networks would be, so CPU-only tests can follow
# the moves of an accelerator annotator.
ACCELERATOR = torch.device("cuda")


class RecordingAnnotator(Annotator):
    """Notes every move of its (imaginary) networks and where they were at each batch; maps are the frames' mean."""

    name = "recording"

    def __init__(self):
        super().__init__(batch_size=4)
        self.moves: list[str] = []
        self.network_device = torch.device("cpu")
        self.ran_on: list[str] = []

    def _move(self, device, dtype):
        self.moves.append(device.type)
        self.network_device = device

    def _annotate_batch(self, frames):
        self.ran_on.append(self.network_device.type)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        return pixels.mean(dim=1, keepdim=True)


def frames(n=3):
    return np.random.default_rng(0).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)


def test_release_parks_the_networks_on_the_cpu_and_the_next_call_brings_them_back():
    annotator = RecordingAnnotator().to(ACCELERATOR)
    annotator.release()
    annotator.release()  # already parked: nothing more to move
    assert annotator.moves == ["cuda", "cpu"]
    assert annotator.device == ACCELERATOR  # where it runs is unchanged
    annotator(frames())
    assert annotator.ran_on == ["cuda"] and annotator.moves == ["cuda", "cpu", "cuda"]
    annotator(frames())  # not released since: no move
    assert annotator.moves == ["cuda", "cpu", "cuda"]


def test_release_on_the_cpu_moves_nothing():
    annotator = RecordingAnnotator()
    annotator.release()
    annotator(frames())
    assert annotator.moves == [] and annotator.ran_on == ["cpu"]


def test_an_edit_session_releases_its_annotators_once_the_maps_are_computed(tmp_path):
    session = EditSession(load_edit_config(dotlist=[f"structure.cache_dir={tmp_path / 'cache'}"]))
    annotator = RecordingAnnotator().to(ACCELERATOR)
    session._annotators = [annotator]
    maps = session.structure(frames())
    assert maps[0].shape == (3, 3, 16, 16)
    assert annotator.ran_on == ["cuda"] and annotator.network_device.type == "cpu"
    session.structure(frames(4))  # the next clip: back on the accelerator to run, parked again after
    assert annotator.ran_on == ["cuda", "cuda"] and annotator.moves == ["cuda", "cpu", "cuda", "cpu"]
