"""Pulumi ComponentResources: one per file."""
