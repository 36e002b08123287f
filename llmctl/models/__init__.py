"""Models: resolving a profile's `model:` to files, and the local model store."""
