"""The Kubernetes side: kopf handlers feeding the state store, and the status writer.

The only package that imports kopf; everything it does is delegate to plain functions.
"""
