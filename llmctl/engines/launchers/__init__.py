"""Launchers: one module per `launcher:` value, each exposing ``LAUNCHER`` (see llmctl.engines.registry)."""
