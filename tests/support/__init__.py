"""Helpers shared by the tests: running servers and building small models."""
