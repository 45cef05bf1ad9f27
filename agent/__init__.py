"""The Tiangong agent: long-polls the cloud for tasks, runs them through executors, reports back."""
