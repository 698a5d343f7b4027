"""ccedit's networks: the temporal adapter, the video UNet, the appearance encoder and the trident composition."""

from .appearance import AppearanceEncoder
from .centre import centre_frame, nearest_centre
from .residuals import BranchResiduals
from .temporal_adapter import CCEditTemporalAdapter
from .trident import TridentModel, build_trident, register_main_branch
from .video_unet import VideoUNet, adapter_config_for

__all__ = ["AppearanceEncoder", "BranchResiduals", "centre_frame", "nearest_centre", "CCEditTemporalAdapter", "TridentModel", "build_trident", "register_main_branch", "VideoUNet", "adapter_config_for"]
