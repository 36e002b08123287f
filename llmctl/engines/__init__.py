"""Engines: finding their binaries and building argv + environment from a profile."""
