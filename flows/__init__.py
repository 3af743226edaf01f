"""Prefect flows: thin wrappers over segpipe's stages.

``segment_batch`` runs a batch; ``nightly`` finds what is new under an input location and runs it through
``segment_batch``; ``prefect.yaml`` at the root deploys ``flows/nightly.py:nightly`` (``python -m flows.serve`` serves
it on one machine).
"""
