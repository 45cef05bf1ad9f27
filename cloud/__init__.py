"""The Tiangong cloud: the FastAPI server that queues tasks and hands them to agents."""
