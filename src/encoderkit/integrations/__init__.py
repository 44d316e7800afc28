"""Adapters that let other tools drive encoderkit models (each imports its tool only when used)."""
