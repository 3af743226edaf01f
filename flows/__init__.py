"""Prefect flows: thin wrappers over segpipe. Deployments point at ``flows/segment_batch.py:segment_batch``."""
