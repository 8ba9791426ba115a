"""The one exception type for bad input: it names the field path that is wrong."""

from __future__ import annotations

__all__ = ["ProblemError"]


class ProblemError(ValueError):
    """Invalid problem or result data.

    ``path`` is a dotted/indexed field path such as ``bids[3].alternatives[0].value``; the message
    says what is wrong with it. The CLI turns this into exit code 2.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message

    def under(self, prefix: str) -> ProblemError:
        """The same error with ``prefix`` put in front of its path."""
        if not prefix:
            return self
        if not self.path:
            return ProblemError(prefix, self.message)
        sep = "" if self.path.startswith("[") else "."
        return ProblemError(f"{prefix}{sep}{self.path}", self.message)
