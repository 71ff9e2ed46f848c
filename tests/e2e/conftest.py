"""End-to-end fixtures: the integration stack (private Asterisk, in-process app, SIPp phones)."""

from tests.integration.conftest import make_stack, phone  # noqa: F401
