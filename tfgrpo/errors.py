"""Errors a user can cause and fix: the CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad config, task file, data row, pack or endpoint: the message says what to fix."""


class EndpointError(UserError):
    """A model endpoint stayed unreachable or kept failing after all retries."""
