"""Which image runs a profile's server, by engine and backend, and what that image runs.

llama.cpp publishes one server image per backend (its entrypoint is ``/app/llama-server``);
vLLM's OpenAI server image is ``vllm/vllm-openai`` (entrypoint ``vllm serve``), AMD's build of
it ``rocm/vllm``. In order, the image is: ``--image NAME=IMAGE``, ``--image IMAGE``, the
profile's own ``docker.image``, this table.
"""

from __future__ import annotations

from ..profiles.schema import CONTAINER_KEY, Profile
from .common import Options, where
from .yamlout import Note

LLAMA_CPP = "ghcr.io/ggml-org/llama.cpp"
LLAMA_IMAGES = {"cpu": f"{LLAMA_CPP}:server", "cuda": f"{LLAMA_CPP}:server-cuda",
                "rocm": f"{LLAMA_CPP}:server-rocm", "vulkan": f"{LLAMA_CPP}:server-vulkan"}
VLLM_IMAGES = {"cuda": "vllm/vllm-openai:latest", "rocm": "rocm/vllm:latest"}

#: what each engine's image runs (a shell line, a `command:` that wraps it, SkyPilot's `run:`)
ENTRYPOINTS = {"llama-server": ["/app/llama-server"], "vllm": ["vllm", "serve"]}

#: for a backend the table lacks, what the comment says
_NO_IMAGE = {
    ("llama-server", "metal"): "Metal runs on macOS only, never in a Linux container: this is the CPU image",
    ("vllm", "cpu"): "vLLM publishes no CPU image: build one (docs.vllm.ai, CPU installation), pass --image",
}


def image_for(profile: Profile, opts: Options) -> Note:
    """The server's image, with a comment saying why it is that one."""
    if profile.name in opts.images:
        return Note(opts.images[profile.name], f"--image {profile.name}=...")
    if "" in opts.images:
        return Note(opts.images[""], "--image")
    if profile.docker is not None:  # the profile names its own container image
        return Note(profile.docker.image, f"{CONTAINER_KEY}.image ({where(profile, CONTAINER_KEY)})")
    table = LLAMA_IMAGES if profile.engine == "llama-server" else VLLM_IMAGES
    default = table["cpu" if profile.engine == "llama-server" else "cuda"]
    image = table.get(profile.backend, default)
    why = f"{profile.engine} on backend {profile.backend} ({where(profile, 'backend')})"
    if profile.backend not in table:
        why += "; " + _NO_IMAGE.get((profile.engine, profile.backend), f"no {profile.backend} image: the CUDA one")
    return Note(image, why)
