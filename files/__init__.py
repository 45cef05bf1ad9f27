"""The file store: streaming writes, hashing, dedup keys, safe zip reading. No FastAPI here."""
