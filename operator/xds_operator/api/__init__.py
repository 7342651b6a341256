"""The user-facing API (Route, Backend) as plain data, and its validation.

Nothing here imports kopf or grpc: the same model serves the file source, the Kubernetes
source, the `validate` command and the tests.
"""
