"""Fakes for boundaries that cannot be real on these machines (each module says what it fakes)."""
