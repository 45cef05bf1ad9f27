"""The cloud's logic. Services take a session and flush; the caller owns the transaction."""
