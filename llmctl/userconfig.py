"""User-level settings: ``$XDG_CONFIG_HOME/llmctl/config.yaml`` (or ``$LLMCTL_HOME/config/config.yaml``).

```yaml
binaries:            # one llama.cpp build per backend
  vulkan: /opt/llama-vulkan/bin/llama-server
  rocm: /opt/llama-rocm/bin/llama-server
  cuda: /opt/llama-cuda/bin/llama-server
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import ProfileError
from .paths import Paths

KEYS = {"binaries"}
BACKENDS = {"cpu", "cuda", "rocm", "vulkan", "metal"}


@dataclass
class UserConfig:
    binaries: dict[str, str] = field(default_factory=dict)
    source: str = ""


def config_path(paths: Paths | None = None) -> Path:
    return (paths or Paths.from_env()).config / "config.yaml"


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> UserConfig:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: YAML syntax error: {exc}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping")
    unknown = set(data) - KEYS
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {sorted(unknown)} (known: {sorted(KEYS)})")
    binaries = data.get("binaries") or {}
    if not isinstance(binaries, dict) or not all(isinstance(v, str) for v in binaries.values()):
        raise ProfileError(f"{path}: binaries: expected a mapping of backend -> path")
    bad = set(binaries) - BACKENDS
    if bad:
        raise ProfileError(f"{path}: binaries: unknown backend(s) {sorted(bad)} (known: {sorted(BACKENDS)})")
    return UserConfig(binaries={k: str(Path(v).expanduser()) for k, v in binaries.items()}, source=path)


def load_user_config(paths: Paths | None = None) -> UserConfig:
    p = config_path(paths)
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return UserConfig()
    return _load(str(p), mtime)
