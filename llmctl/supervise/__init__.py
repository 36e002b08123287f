"""Supervision: one keeper process per server, its state machine, state files and stops."""
