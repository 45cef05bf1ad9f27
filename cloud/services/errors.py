"""Errors services raise; the API maps each to its status code and `{"error": ...}` body."""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """Base: a message meant for the caller, plus optional extra JSON fields."""

    status_code = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class BadRequest(ServiceError):
    status_code = 400


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409


class Forbidden(ServiceError):
    """The caller is known but may not do this (a token's scope, the command policy)."""

    status_code = 403
