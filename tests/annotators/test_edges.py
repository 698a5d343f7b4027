"""Lineart and soft edges: the controlnet-aux networks with random weights, saved in the folder layout their
`from_pretrained` reads, loaded through the annotators; plus the map conventions with stand-in networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ccedit.annotators import LineartEdges, SoftEdges, build_annotator
from ccedit.annotators.edges import safe_step
from ccedit.errors import ModelNotFoundError, UserError


@pytest.fixture(scope="module")
def annotator_folder(tmp_path_factory):
    """A folder laid out like `lllyasviel/Annotators` with randomly initialised lineart, HED and PiDiNet weights."""
    from controlnet_aux.hed import ControlNetHED_Apache2
    from controlnet_aux.lineart import Generator
    from controlnet_aux.pidi.model import pidinet

    folder = tmp_path_factory.mktemp("annotators")
    torch.manual_seed(0)
    torch.save(Generator(3, 1, 3).state_dict(), folder / "sk_model.pth")
    torch.save(Generator(3, 1, 3).state_dict(), folder / "sk_model2.pth")
    torch.save(ControlNetHED_Apache2().state_dict(), folder / "ControlNetHED.pth")
    # PiDiNet checkpoints come from DataParallel training: weights under "state_dict" with a "module." prefix.
    pidinet_weights = {f"module.{k}": v for k, v in pidinet().state_dict().items()}
    torch.save({"state_dict": pidinet_weights}, folder / "table5_pidinet.pth")
    return str(folder)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("lineart", {}),
        ("lineart", {"use_coarse_model": True}),
        ("softedge", {}),
        ("softedge", {"detector": "pidinet"}),
        ("softedge", {"detector": "hed", "use_safe_step": True}),
    ],
)
def test_random_weight_networks_load_and_keep_the_contract(annotator_folder, clip, check_maps, name, options):
    annotator = build_annotator(name, model=annotator_folder, batch_size=2, **options)
    maps = annotator(clip)  # 40x56: padded for the network, cropped back
    check_maps(maps, clip)
    assert (maps[:, 0] == maps[:, 1]).all() and (maps[:, 0] == maps[:, 2]).all()
    key = annotator.cache_key()
    assert key["model"] == annotator_folder and key["weights"]
    if options.get("use_safe_step"):
        assert set(maps.unique().tolist()) <= {0.0, 0.5, 1.0}


def test_cache_key_names_the_variant(annotator_folder):
    keys = [
        LineartEdges(annotator_folder).cache_key(),
        LineartEdges(annotator_folder, use_coarse_model=True).cache_key(),
        SoftEdges(annotator_folder).cache_key(),
        SoftEdges(annotator_folder, detector="pidinet").cache_key(),
        SoftEdges(annotator_folder, use_safe_step=True).cache_key(),
    ]
    assert len({repr(sorted(k.items())) for k in keys}) == len(keys)


def test_lineart_is_white_lines_on_black():
    class DarkLinesOnWhite(torch.nn.Module):
        def forward(self, pixels):
            return 1.0 - pixels.mean(dim=1, keepdim=True)  # white input -> black line

    frames = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    frames[0, :, 8] = 255
    maps = LineartEdges(DarkLinesOnWhite())(frames)
    assert (maps[0, :, :, 8] == 1.0).all() and (maps[0, :, :, :8] == 0.0).all()


def test_hed_averages_side_outputs_before_the_sigmoid():
    class TwoScaleHED(torch.nn.Module):
        def forward(self, pixels):
            assert float(pixels.max()) > 1.0  # HED takes 0..255
            logits = pixels.mean(dim=1, keepdim=True) / 255.0 * 8.0 - 4.0
            return logits, torch.nn.functional.avg_pool2d(logits, 2) - 6.0  # logits 4 and -2 on white

    frames = np.full((1, 16, 16, 3), 255, dtype=np.uint8)
    maps = SoftEdges(TwoScaleHED())(frames)
    # sigmoid(mean(4, -2)) = sigmoid(1); the mean of the sigmoids would be about 0.55.
    torch.testing.assert_close(maps, torch.full_like(maps, torch.sigmoid(torch.tensor(1.0)).item()))


def test_safe_step_levels():
    edges = torch.tensor([0.0, 0.2, 0.34, 0.5, 0.7, 1.0])
    assert safe_step(edges).tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]


def test_missing_weights_and_bad_options(tmp_path):
    with pytest.raises(ModelNotFoundError, match="sk_model.pth, sk_model2.pth"):
        LineartEdges(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="ControlNetHED.pth"):
        SoftEdges(str(tmp_path))
    with pytest.raises(ModelNotFoundError) as info:
        SoftEdges("ccedit-tests/no-such-repo", detector="pidinet")
    assert "\n" not in str(info.value) and "table5_pidinet.pth" in str(info.value)
    with pytest.raises(UserError, match="detector"):
        SoftEdges(torch.nn.Identity(), detector="canny")
