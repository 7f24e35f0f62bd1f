"""The one error type of the Python client: a code from docs/ERRORS.md and a message."""


class TrellisError(Exception):
    """A failure with a stable code, e.g. ``ERR_OBJECT_NOT_FOUND``; the store's own codes pass through unchanged."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
