"""Map `backend` + `devices` to the environment variables each GPU runtime reads."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..profiles.schema import Profile

DEVICE_ENV = {
    "cuda": ("CUDA_VISIBLE_DEVICES",),
    "rocm": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
    "vulkan": ("GGML_VK_VISIBLE_DEVICES",),
}


def device_env(backend: str, devices: list[str]) -> dict[str, str]:
    """Environment that restricts the server to ``devices`` on ``backend``.

    (``backend: cpu`` keeps the weights off any GPU through ``-ngl 0`` in the argv instead.)
    """
    if backend == "cpu" or not devices:
        return {}
    value = ",".join(devices)
    return {var: value for var in DEVICE_ENV.get(backend, ())}


def placed_on(profile: Profile, devices: tuple[str, ...]) -> Profile:
    """A copy of ``profile`` whose ``devices:`` are ``devices`` (where the gateway or `up`
    placed an unpinned profile): its server then gets them as its visible devices."""
    out = copy.copy(profile)
    out.devices = list(devices)
    return out
