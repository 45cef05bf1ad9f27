"""Task types: one module per type behind the small contract in executors.base."""
