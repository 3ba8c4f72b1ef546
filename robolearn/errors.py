"""Errors a user can fix. The CLI prints their message without a traceback (exit 2); the library raises them."""


class UserError(Exception):
    """An error the user can fix (a missing display, device or file); the message says what and how."""
