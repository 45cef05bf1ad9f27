"""How a request to the cloud fails, whichever transport carried it (HTTP or the channel)."""

from __future__ import annotations


class CloudUnavailable(Exception):
    """The cloud could not be reached or answered 5xx; worth retrying later."""


class Rejected(Exception):
    """The cloud refused the request (4xx); `next_seq` is set when it asks for a log resend."""

    def __init__(self, status: int, message: str, next_seq: int | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.next_seq = next_seq
