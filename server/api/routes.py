"""Imports every API resource module so that its routes are registered on the blueprint."""
