"""Pipelines: the denoising loop and `CCEditPipeline`."""

from .pipeline_ccedit import CCEditPipeline, CCEditPipelineOutput

__all__ = ["CCEditPipeline", "CCEditPipelineOutput"]
