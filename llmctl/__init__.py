"""llmctl: run local LLM servers from YAML profiles.

The core works without the CLI::

    from llmctl import Supervisor, load_profiles
    sup = Supervisor(load_profiles(["profiles/demo.yaml"]))
    sup.start(["light"])
    print(sup.status(["light"])[0].url)
    sup.stop(["light"])
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Supervisor", "load_profiles", "__version__"]


def __getattr__(name: str):  # lazy: `import llmctl` stays cheap
    if name == "Supervisor":
        from .supervise.control import Supervisor

        return Supervisor
    if name == "load_profiles":
        from .profiles.loader import load

        return load
    raise AttributeError(name)
