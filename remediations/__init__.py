"""Remediations: one module per system acted on. Each declares its params and side effects in `plugins`."""
