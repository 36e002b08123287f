"""Profiles: the schema and the strict loader."""

from .loader import Problem, discover, load
from .schema import Config, Defaults, Docker, Profile, Sampling, Task

__all__ = ["Config", "Defaults", "Docker", "Problem", "Profile", "Sampling", "Task", "discover", "load"]
