"""`CCEditPipeline.compile_networks`: the networks of every step compiled in place give the eager edit, and are not
compiled again when called outside the pipeline."""

import numpy as np
import pytest
import torch

from ccedit.kinds import load_pipeline


def edit(pipe, video, maps):
    return pipe("a", video, [maps], keyframe=video[1], keyframe_index=1, num_inference_steps=2,
                generator=torch.Generator().manual_seed(0), progress=False, output_type="latent").frames


def counting(backend: str, graphs: list):
    """Dynamo backend `backend` that also appends every graph it compiles to `graphs`."""
    compile_graph = torch._dynamo.lookup_backend(backend)

    def compile_and_count(gm, example_inputs):
        graphs.append(gm)
        return compile_graph(gm, example_inputs)

    return compile_and_count


@pytest.mark.parametrize("backend", ["eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_networks_give_the_eager_edit_and_are_not_compiled_again_outside_the_pipeline(backend):
    """One compilation checks both: compiling is most of the cost. A compiled network called by the pipeline and then
    directly (as the automatic keyframe calls the ControlNet, or a user the trident) with the same inputs runs the
    same compiled code: the pipeline adds no function mode."""
    torch._dynamo.reset()
    pipe = load_pipeline("tiny", device="cpu", dtype="float32")
    video = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    maps = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    expected = edit(pipe, video, maps)  # without CPU tuning, as compiled networks run: compare like with like
    pipe.enable_cpu_tuning()  # and the compiled networks ignore it
    trident = pipe.trident()
    seen = []
    handle = trident.main.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args, kwargs)) if not seen else None, with_kwargs=True)
    graphs = []
    pipe.compile_networks(backend=counting(backend, graphs))
    got = edit(pipe, video, maps)
    handle.remove()
    assert seen, "the compiled main branch was not called"
    compiled = [m for m in (trident.main, *trident.structure, trident.appearance) if m._compiled_call_impl is not None]
    assert len(compiled) == 3
    # the eager backend runs the traced graphs as they are; inductor fuses and reorders float arithmetic
    tolerance = 0 if backend == "eager" else 1e-3
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance)

    compiled_graphs = len(graphs)
    assert compiled_graphs > 0
    args, kwargs = seen[0]
    with torch.no_grad():
        trident.main(*args, **kwargs)
    assert len(graphs) == compiled_graphs, "calling the compiled main branch outside the pipeline compiled it again"
    torch._dynamo.reset()
