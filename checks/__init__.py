"""Checks: one module per system probed. Each module declares its checks in `plugins`."""
