"""ComfyUI-Manager snapshots: read them into manifest plugins and pip pins, write a host's as one."""
