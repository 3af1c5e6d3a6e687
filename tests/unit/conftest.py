"""The `hop` fixture (a configured CredHop in a taddons context) for every addon test."""

from tests.unit.addon_helpers import hop  # noqa: F401
