"""ccedit: controllable video editing with the CCEdit trident network on diffusers."""

__version__ = "0.1.0"
