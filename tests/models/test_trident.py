"""Invariants of the trident network on tiny random components."""

import json

import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from ccedit.convert.networks import map_networks
from ccedit.models.geometry import SD15_GEOMETRY, Geometry, build_network_modules
from ccedit.models import AppearanceEncoder, CCEditTemporalAdapter, TridentModel, VideoUNet
from ccedit.models.layers import randomize_zero_parameters
from tests.conftest import REFERENCE, require

TINY = Geometry(model_channels=32, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[1, 2], num_heads=2, context_dim=16)


def randomize_zeros(module: torch.nn.Module, seed: int) -> None:
    """Random values for zero-initialised tensors, so that every path of a fresh module does something."""
    randomize_zero_parameters(module, torch.Generator().manual_seed(seed), std=0.05)


def tiny_modules(keyframe: bool, zero_temporal: bool = False):
    torch.manual_seed(0)
    modules = build_network_modules(TINY, keyframe)
    for name, m in modules.items():
        if name == "temporal" and zero_temporal:
            m.zero_init()
        else:
            randomize_zeros(m, seed=len(name))
    return modules


def make_model(modules) -> TridentModel:
    main = VideoUNet(modules["unet"], modules["temporal"])
    return TridentModel(main, [modules["controlnet"]], modules.get("appearance")).eval()


def inputs(b=2, f=3, h=4, w=6):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, 4, f, h, w, generator=g)
    t = torch.tensor([900, 50][:b])
    ctx = torch.randn(b, 5, 16, generator=g)
    maps = torch.rand(b, 3, f, 8 * h, 8 * w, generator=g)
    key = torch.randn(b, 4, h, w, generator=g)
    return x, t, ctx, maps, key


def test_zero_initialised_temporal_layers_equal_per_frame_sd_unet():
    modules = tiny_modules(keyframe=True, zero_temporal=True)
    model = make_model(modules)
    x, t, ctx, _, _ = inputs()
    b, c, f, h, w = x.shape
    with torch.no_grad():
        video = model.main(x, t, ctx)
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)
        per_frame = modules["unet"](frames, t.repeat_interleave(f), ctx.repeat_interleave(f, dim=0)).sample
    per_frame = per_frame.view(b, f, c, h, w).transpose(1, 2)
    torch.testing.assert_close(video, per_frame, atol=1e-5, rtol=1e-4)
    # and the temporal layers matter once they are not zero
    randomize_zeros(modules["temporal"], seed=3)
    with torch.no_grad():
        assert (model.main(x, t, ctx) - per_frame).abs().max() > 1e-3


def test_structure_scale_zero_equals_no_controlnet_and_scale_matters():
    model = make_model(tiny_modules(keyframe=False))
    x, t, ctx, maps, _ = inputs()
    with torch.no_grad():
        none = model(x, t, ctx)
        zero = model(x, t, ctx, structure_maps=[maps], structure_scale=0.0)
        one = model(x, t, ctx, structure_maps=[maps], structure_scale=1.0)
        half = model(x, t, ctx, structure_maps=[maps], structure_scale=0.5)
    assert torch.equal(none, zero)
    assert (one - none).abs().max() > 1e-4
    assert (half - one).abs().max() > 1e-5


def test_two_controlnets_sum_their_scaled_residuals():
    modules = tiny_modules(keyframe=False)
    x, t, ctx, maps, _ = inputs()
    single = make_model(modules)
    double = TridentModel(single.main, [modules["controlnet"], modules["controlnet"]]).eval()
    with torch.no_grad():
        a = single(x, t, ctx, structure_maps=[maps], structure_scale=1.0)
        b = double(x, t, ctx, structure_maps=[maps, maps], structure_scale=[0.25, 0.75])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_appearance_branch_touches_only_the_keyframes_frame_at_its_input():
    modules = tiny_modules(keyframe=True, zero_temporal=True)
    model = make_model(modules)
    x, t, ctx, _, key = inputs(f=4)
    with torch.no_grad():
        base = model(x, t, ctx)
        edited = model(x, t, ctx, keyframe_latent=key, keyframe_index=1)
        scale0 = model(x, t, ctx, keyframe_latent=key, keyframe_index=1, appearance_scale=0.0)
    changed = (edited - base).abs().amax(dim=(0, 1, 3, 4))
    assert changed[1] > 1e-4
    assert torch.equal(changed[[0, 2, 3]], torch.zeros(3))
    assert torch.equal(scale0, base)


def test_keyframe_effect_spreads_through_trained_temporal_layers():
    model = make_model(tiny_modules(keyframe=True))
    x, t, ctx, _, key = inputs(f=4)
    with torch.no_grad():
        diff = (model(x, t, ctx, keyframe_latent=key, keyframe_index=3) - model(x, t, ctx)).abs().amax(dim=(0, 1, 3, 4))
    assert (diff > 1e-5).all()


def test_shared_residuals_equal_the_per_sample_keyframe_path():
    model = make_model(tiny_modules(keyframe=True))
    x, t, ctx, maps, key = inputs(b=2, f=5)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        per_sample = model(x, t, ctx, structure_maps=[maps], keyframe_latent=key[:1].expand(2, -1, -1, -1), keyframe_index=3)
        shared = model.appearance_residuals(key[:1], t[0], frames=[3])
        precomputed = model(x, t, ctx, structure_maps=[maps], appearance=shared)
    torch.testing.assert_close(precomputed, per_sample, atol=1e-5, rtol=1e-5)


def test_residuals_at_several_timesteps_in_one_call_equal_one_call_each():
    model = make_model(tiny_modules(keyframe=True))
    _, _, _, _, key = inputs(b=1, f=5)
    two = torch.cat([key, -key])
    with torch.no_grad():
        batched = model.appearance_residuals_at(two, [900.0, torch.tensor(500), 100.0], frames=[0, 4])
        for residuals, t in zip(batched, (900, 500, 100), strict=True):
            alone = model.appearance_residuals(two, torch.tensor(t), frames=[0, 4])
            assert residuals.frames == alone.frames == (0, 4)
            for got, expected in zip([*residuals.down, residuals.mid], [*alone.down, alone.mid], strict=True):
                torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (batched[0].mid - batched[2].mid).abs().max() > 1e-4  # each timestep its own


def test_two_keyframes_each_reach_their_own_frame():
    modules = tiny_modules(keyframe=True, zero_temporal=True)
    model = make_model(modules)
    x, t, ctx, _, key = inputs(b=1, f=5)
    two = torch.cat([key, -key])
    with torch.no_grad():
        base = model(x, t, ctx, anchor_index=2)
        both = model(x, t, ctx, appearance=model.appearance_residuals(two, t[0], frames=[0, 4]), anchor_index=2)
        first = model(x, t, ctx, appearance=model.appearance_residuals(two[:1], t[0], frames=[0]), anchor_index=2)
    changed = (both - base).abs().amax(dim=(0, 1, 3, 4))
    assert changed[0] > 1e-4 and changed[4] > 1e-4
    assert torch.equal(changed[1:4], torch.zeros(3))
    torch.testing.assert_close(both[:, :, 0], first[:, :, 0])


def test_an_anchor_per_sample_equals_separate_runs():
    model = make_model(tiny_modules(keyframe=True))
    x, t, ctx, _, _ = inputs(b=2, f=4)
    with torch.no_grad():
        both = model(x, t, ctx, anchor_index=torch.tensor([0, 3]))
        a = model(x[:1], t[:1], ctx[:1], anchor_index=0)
        b = model(x[1:], t[1:], ctx[1:], anchor_index=3)
        other = model(x[:1], t[:1], ctx[:1], anchor_index=3)
    torch.testing.assert_close(both, torch.cat([a, b]), atol=1e-5, rtol=1e-5)
    assert (a - other).abs().max() > 1e-5  # the anchor matters in the keyframe model's cross-frame attention


def test_a_keyframe_at_scale_zero_moves_nothing_wherever_it_is():
    model = make_model(tiny_modules(keyframe=True))
    x, t, ctx, _, key = inputs(f=5)
    with torch.no_grad():
        none = model(x, t, ctx)
        for index in range(5):
            assert torch.equal(model(x, t, ctx, keyframe_latent=key, keyframe_index=index, appearance_scale=0.0), none)


def test_batch_of_two_equals_two_single_runs():
    model = make_model(tiny_modules(keyframe=True))
    x, t, ctx, maps, key = inputs()
    with torch.no_grad():
        both = model(x, t, ctx, structure_maps=[maps], keyframe_latent=key, keyframe_index=0)
        for i in range(2):
            one = model(x[i : i + 1], t[i : i + 1], ctx[i : i + 1], structure_maps=[maps[i : i + 1]],
                        keyframe_latent=key[i : i + 1], keyframe_index=0)
            torch.testing.assert_close(both[i : i + 1], one, atol=1e-4, rtol=1e-4)


def test_odd_latent_size_round_trips():
    model = make_model(tiny_modules(keyframe=False))
    x, t, ctx, _, _ = inputs(h=5, w=7)
    with torch.no_grad():
        assert model(x, t, ctx).shape == x.shape


def test_bfloat16_adds_no_error_beyond_diffusers_own_unet():
    # A random tiny network with 1 channel per temporal norm group is very sensitive to rounding, so compare
    # against the reference's own bf16 error: with identity temporal layers ccedit must lose no more than
    # diffusers' UNet does per frame, and with random temporal layers it must stay finite.
    import copy

    modules = tiny_modules(keyframe=True, zero_temporal=True)
    model = make_model(modules)
    x, t, ctx, maps, key = inputs()
    b, c, f, h, w = x.shape
    frames, ft, fctx = x.transpose(1, 2).reshape(b * f, c, h, w), t.repeat_interleave(f), ctx.repeat_interleave(f, dim=0)
    with torch.no_grad():
        ref_unet = modules["unet"](frames, ft, fctx).sample
        low_unet = copy.deepcopy(modules["unet"]).bfloat16()(frames.bfloat16(), ft, fctx.bfloat16()).sample
        unet_err = (low_unet.float() - ref_unet).norm() / ref_unet.norm()
        ref = model.main(x, t, ctx)
        low = copy.deepcopy(model).bfloat16().main(x.bfloat16(), t, ctx.bfloat16())
        ours_err = (low.float() - ref).norm() / ref.norm()
        assert low.dtype == torch.bfloat16
        assert ours_err <= 1.5 * unet_err + 1e-4, (ours_err, unet_err)
        randomize_zeros(modules["temporal"], seed=5)
        full = model.bfloat16()(x.bfloat16(), t, ctx.bfloat16(), structure_maps=[maps.bfloat16()], keyframe_latent=key.bfloat16())
    assert torch.isfinite(full).all()


def test_gradient_checkpointing_gives_the_same_gradients():
    modules = tiny_modules(keyframe=True)
    model = make_model(modules).train()
    x, t, ctx, maps, key = inputs(b=1)

    def grads():
        model.zero_grad()
        model(x, t[:1], ctx, structure_maps=[maps], keyframe_latent=key).square().mean().backward()
        return [p.grad.clone() for p in modules["temporal"].parameters()]

    def count_temporal_forwards(run):
        calls = []
        layer = modules["temporal"].down_blocks[0].attentions[0].temporal
        handle = layer.register_forward_pre_hook(lambda *_: calls.append(1))  # a recomputation may stop early
        try:
            return run(), len(calls)
        finally:
            handle.remove()

    plain, plain_calls = count_temporal_forwards(grads)
    # The standard diffusers switch on the main branch: whole blocks recompute in the backward pass.
    model.main.enable_gradient_checkpointing()
    checkpointed, block_calls = count_temporal_forwards(grads)
    model.main.disable_gradient_checkpointing()
    # The adapter's own switch: only its attention layers recompute.
    modules["temporal"].enable_gradient_checkpointing()
    adapter_checkpointed, adapter_calls = count_temporal_forwards(grads)
    modules["temporal"].disable_gradient_checkpointing()
    assert (plain_calls, block_calls, adapter_calls) == (1, 2, 2)  # each switch really recomputes
    for a, b, c in zip(plain, checkpointed, adapter_checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-5)
    assert count_temporal_forwards(grads)[1] == 1  # and both switch off again


def test_from_unet2d_starts_as_the_image_unet_and_freezes_only_the_base():
    modules = tiny_modules(keyframe=True)
    main = VideoUNet.from_unet2d(modules["unet"], cross_frame_attention=True)
    x, t, ctx, _, _ = inputs()
    b, c, f, h, w = x.shape
    with torch.no_grad():
        per_frame = modules["unet"](x.transpose(1, 2).reshape(b * f, c, h, w), t.repeat_interleave(f),
                                    ctx.repeat_interleave(f, dim=0)).sample
        torch.testing.assert_close(main(x, t, ctx), per_frame.view(b, f, c, h, w).transpose(1, 2), atol=1e-5, rtol=1e-4)
    main.freeze_unet2d_params()
    roles = main.named_parameters_by_role()
    trainable = {n for n, p in main.named_parameters() if p.requires_grad}
    assert trainable == set(roles["temporal"]) | set(roles["cross_frame"])
    assert roles["cross_frame"] and all(".cross_frame." in n for n in roles["cross_frame"])
    assert not any(".cross_frame." in n for n in roles["temporal"])
    with pytest.raises(NotImplementedError, match="save_temporal"):
        main.save_pretrained("unused")


def test_trident_trains_only_the_chosen_roles_and_saves_only_them(tmp_path):
    modules = tiny_modules(keyframe=True)
    model = make_model(modules)
    params = model.set_trainable(["temporal", "appearance"])
    roles = model.named_parameters_by_role()
    expected = {**roles["temporal"], **roles["appearance"]}
    assert {id(p) for p in params} == {id(p) for p in expected.values()}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(expected)
    with pytest.raises(ValueError, match="unknown parameter roles"):
        model.set_trainable(["unet"])
    assert model.save_trained(tmp_path, ["temporal", "appearance"]) == ["temporal", "appearance"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["appearance", "temporal"]  # no UNet, no ControlNet
    loaded = CCEditTemporalAdapter.from_pretrained(tmp_path / "temporal")
    for (k, a), (_, b) in zip(modules["temporal"].state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_appearance_encoder_copied_from_the_unet_encoder():
    from ccedit.models.appearance import appearance_encoder_from_unet

    modules = tiny_modules(keyframe=True)
    unet = modules["unet"]
    encoder = appearance_encoder_from_unet(unet)
    ours, theirs = encoder.state_dict(), unet.state_dict()
    assert torch.equal(ours["down_blocks.0.resnets.0.conv1.weight"], theirs["down_blocks.0.resnets.0.conv1.weight"])
    block = "down_blocks.1.attentions.0.transformer_blocks.0."
    assert torch.equal(ours[block + "norm2.weight"], theirs[block + "norm3.weight"])  # SD's pre-feed-forward norm
    assert torch.equal(ours[block + "attn1.to_q.weight"], theirs[block + "attn1.to_q.weight"])
    # the zero convolutions keep the main branch unchanged until training moves them
    down, mid = encoder(torch.randn(2, 4, 4, 6), torch.tensor([10, 500]))
    assert all(not r.any() for r in down) and not mid.any()


def test_adapter_and_appearance_encoder_save_and_load_exactly(tmp_path):
    modules = tiny_modules(keyframe=True)
    for name, cls in (("temporal", CCEditTemporalAdapter), ("appearance", AppearanceEncoder)):
        modules[name].save_pretrained(tmp_path / name)
        assert (tmp_path / name / "diffusion_pytorch_model.safetensors").is_file()
        loaded = cls.from_pretrained(tmp_path / name)
        for (k, a), (k2, b) in zip(modules[name].state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b)
    # the temporal adapter refuses a base UNet of another shape
    other = UNet2DConditionModel(**Geometry(**{**TINY.__dict__, "channel_mult": [1, 1]}).unet_config())
    with pytest.raises(ValueError, match="does not fit"):
        VideoUNet(other, modules["temporal"])


def _meta_state(listing):
    return {k["key"]: torch.empty(k["shape"], device="meta") for k in listing["keys"]}


@pytest.mark.parametrize("name,keyframe", [("keys_tv2v.json", False), ("keys_tvi2v.json", True)])
def test_full_size_checkpoint_keys_map_onto_ccedit_modules(name, keyframe):
    listing = json.loads(require(REFERENCE / name).read_text())
    state = _meta_state(listing)
    mapped, modules = map_networks(state, Geometry.from_dict(SD15_GEOMETRY), source=name)
    assert ("appearance" in modules) == keyframe
    network_keys = {k for k in state if k.startswith("model.diffusion_model.")}
    assert mapped.consumed == network_keys
    counts = {c: len(sd) for c, sd in mapped.components.items()}
    assert counts["unet"] == 686 and counts["controlnet"] == 340
    assert counts["temporal"] == (524 + 304 if keyframe else 524)
    assert counts.get("appearance", 0) == (275 if keyframe else 0)
    assert isinstance(modules["controlnet"], ControlNetModel)


def test_a_missing_or_misshapen_key_is_reported():
    from ccedit.errors import UserError

    listing = json.loads(require(REFERENCE / "keys_tv2v.json").read_text())
    state = _meta_state(listing)
    dropped = "model.diffusion_model.output_blocks.3.1.proj_out_temporal.weight"
    del state[dropped]
    with pytest.raises(UserError, match="missing keys"):
        map_networks(state, Geometry.from_dict(SD15_GEOMETRY))
    state = _meta_state(listing)
    state["model.diffusion_model.input_blocks_temporal.0.weight"] = torch.empty(320, 320, 5, device="meta")
    with pytest.raises(UserError, match="shape mismatches"):
        map_networks(state, Geometry.from_dict(SD15_GEOMETRY))
    state = _meta_state(listing)
    state["model.diffusion_model.input_blocks.1.0.foreign.weight"] = torch.empty(3, device="meta")
    with pytest.raises(UserError, match="unexpected keys"):
        map_networks(state, Geometry.from_dict(SD15_GEOMETRY))


def test_the_appearance_network_is_routed_through_its_registered_adapter():
    from diffusers import SparseControlNetModel

    from ccedit.models.side_branches import (
        APPEARANCE_BRANCHES, KeyframeEncoderBranch, SparseControlBranch, appearance_branch,
    )

    assert APPEARANCE_BRANCHES[SparseControlNetModel] is SparseControlBranch
    model = make_model(tiny_modules(keyframe=True))
    assert isinstance(model.appearance_branch, KeyframeEncoderBranch)
    assert model.appearance_per_timestep and model.centres_keyframes
    model.appearance = None  # the adapter follows the network it routes to
    assert model.appearance_branch is None and not model.appearance_per_timestep
    with pytest.raises(ValueError, match="no appearance branch is registered for Linear"):
        appearance_branch(torch.nn.Linear(1, 1))


class KeyframeBias(torch.nn.Module):
    """A side network of this test only: one learned residual per main-branch skip, weighted by the mean of the
    keyframe latents it is given."""

    def __init__(self, down: list[torch.Tensor], mid: torch.Tensor):
        super().__init__()
        self.down = torch.nn.ParameterList(torch.nn.Parameter(torch.randn_like(d[:1]) * 0.1) for d in down)
        self.mid = torch.nn.Parameter(torch.randn_like(mid[:1]) * 0.1)


def _keyframe_bias_adapter():
    from ccedit.models import BranchResiduals
    from ccedit.models.side_branches import AppearanceBranch

    class KeyframeBiasBranch(AppearanceBranch):
        """Its adapter: residuals for every frame, scaled by the keyframes' mean and the branch's scale."""

        def window_residuals(self, sample, timestep, encoder_hidden_states, latents, frames, scale):
            rows = sample.shape[0] * sample.shape[2]
            weight = latents.mean() * scale
            return BranchResiduals([weight * d.expand(rows, -1, -1, -1) for d in self.network.down],
                                   weight * self.network.mid.expand(rows, -1, -1, -1), frames=None, into="skips")

    return KeyframeBiasBranch


@pytest.mark.parametrize("main", ["ccedit", "animatediff"])
def test_a_new_side_branch_needs_only_an_adapter_to_reach_either_main_branch(main, monkeypatch):
    from ccedit.models import build_trident
    from ccedit.models.side_branches import APPEARANCE_BRANCHES
    from ccedit.pipelines.tiny import tiny_animatediff_components

    if main == "ccedit":
        model = make_model(tiny_modules(keyframe=False))
    else:
        parts = tiny_animatediff_components(appearance=False)
        model = build_trident(parts["unet"], parts["temporal"], [parts["controlnet"]]).eval()
    x, t, _, maps, key = inputs(f=4, h=4, w=4)
    ctx = torch.randn(2, 5, model.structure[0].config.cross_attention_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        down, mid = model.structure_residuals(x, t, ctx, [maps], [1.0])  # the shapes the main branch adds
        torch.manual_seed(3)
        model.appearance = KeyframeBias(down, mid)
        monkeypatch.setitem(APPEARANCE_BRANCHES, KeyframeBias, _keyframe_bias_adapter())
        keys = key[:, None]
        routed = model(x, t, ctx, appearance_condition=(keys, [1]), appearance_scale=0.5)
        expected = model.appearance_branch.window_residuals(x, t, ctx, keys, [1], 0.5)
        direct = model.main(x, t, ctx, residuals=[expected])
        plain = model(x, t, ctx)
        off = model(x, t, ctx, appearance_condition=(keys, [1]), appearance_scale=0.0)
    assert torch.equal(routed, direct)
    assert (routed - plain).abs().max() > 1e-3  # its residuals moved the prediction
    assert torch.equal(off, plain)  # a zero scale runs no branch


def test_routing_puts_stream_residuals_first_and_hands_main_inputs_over_once():
    from ccedit.models import BranchResiduals
    from ccedit.models.side_branches import MainInputs, route

    skips = BranchResiduals([torch.zeros(6, 2, 1, 1)], torch.zeros(6, 2, 1, 1))
    stream = BranchResiduals.shared([torch.zeros(1, 2, 1, 1)], torch.zeros(1, 2, 1, 1), [1], into="stream")
    routed = route([skips, MainInputs({"control": 1}), stream], num_frames=3)
    assert routed.residuals == [stream, skips] and routed.inputs == {"control": 1}
    assert routed.anchor_index == 1  # the targeted frame nearest the centre
    assert route([skips, stream], num_frames=3, anchor_index=0).anchor_index == 0
    with pytest.raises(ValueError, match="two side branches give the main branch's control"):
        route([MainInputs({"control": 1}), MainInputs({"control": 2})], num_frames=3)
    with pytest.raises(ValueError, match=r"aimed at frames \[1\] of a 1-frame window"):
        route([stream], num_frames=1)


def test_sparse_control_takes_one_keyframe_latent_per_sample_as_its_window_keyframe():
    """The call training makes (one keyframe latent per sample, at its frame) serves SparseCtrl too."""
    from ccedit.pipelines.tiny import tiny_animatediff_components
    from ccedit.models import build_trident

    parts = tiny_animatediff_components()
    model = build_trident(parts["unet"], parts["temporal"], [parts["controlnet"]], parts["appearance"]).eval()
    x, t, _, _, key = inputs(f=4, h=4, w=4)
    ctx = torch.randn(2, 5, parts["unet"].config.cross_attention_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        given = model(x, t, ctx, keyframe_latent=key, keyframe_index=1, appearance_scale=0.7)
        window = model(x, t, ctx, appearance_condition=(key[:, None], [1]), appearance_scale=0.7)
        centre = model(x, t, ctx, keyframe_latent=key, appearance_scale=0.7)
        at_centre = model(x, t, ctx, appearance_condition=(key[:, None], [2]), appearance_scale=0.7)
    assert torch.equal(given, window) and torch.equal(centre, at_centre)
    assert (given - centre).abs().max() > 1e-4  # the frame it is placed at matters
    with pytest.raises(ValueError, match=r"`keyframe_index` must be in \[0, 3\], got 4"):
        model(x, t, ctx, keyframe_latent=key, keyframe_index=4)
