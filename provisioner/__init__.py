"""provision: declarative, GPU-aware provisioning of ComfyUI + Nunchaku hosts."""

__version__ = "0.1.0"
