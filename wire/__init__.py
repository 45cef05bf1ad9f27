"""Pydantic models that cross a process boundary (cloud <-> agent <-> caller). No DB, FastAPI or httpx."""

API_VERSION = "1"
