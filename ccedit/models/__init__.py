"""ccedit's networks: the temporal adapter, the video UNet, the appearance encoder and the trident composition."""

from .appearance import AppearanceEncoder, AppearanceResiduals
from .temporal_adapter import CCEditTemporalAdapter
from .trident import TridentModel
from .video_unet import VideoUNet, adapter_config_for

__all__ = ["AppearanceEncoder", "AppearanceResiduals", "CCEditTemporalAdapter", "TridentModel", "VideoUNet", "adapter_config_for"]
