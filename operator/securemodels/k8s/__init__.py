"""All I/O with the Kubernetes API server lives in this package."""
