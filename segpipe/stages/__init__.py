"""The stages of one image, each a small module that takes and returns frozen dataclasses.

``plan`` (validate the batch, write nothing) -> ``ingest`` (input tiled into ``<store>/0``) -> ``infer`` (Dask tasks of
consecutive chunks write ``<store>/labels/mask/0``) -> ``finalize`` (pyramids, NGFF metadata: the store's commit) ->
``evaluate`` (confusion matrices per chunk, summed) -> ``report`` (metrics.json, preview, the image's ``done.json``
commit record; the batch report). None of them imports Prefect, MLflow or distributed: chunk work runs through
the executor they are given, and bytes move through ``segpipe.storage``.
"""
