"""ccedit's networks: the temporal adapter, the video UNet, the appearance encoder and the trident composition."""

from .appearance import AppearanceEncoder
from .temporal_adapter import CCEditTemporalAdapter
from .trident import TridentModel
from .video_unet import VideoUNet, adapter_config_for

__all__ = ["AppearanceEncoder", "CCEditTemporalAdapter", "TridentModel", "VideoUNet", "adapter_config_for"]
