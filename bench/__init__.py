"""segpipe's benchmarks: ``python -m bench [--quick] [--only NAME ...] [--out bench/results]``.

floor (the bare forward pass), end_to_end (the whole command against the floor), monai (MONAI's
sliding_window_inference side by side), memory_scaling (peak RSS up to a gigapixel), overhead (start-up, a bad
input, --help), batch_vs_single and s3_vs_local. Each writes ``bench/results/NAME.json``; ``summary.json``
checks the goals. ``bench/metrics_speed.py`` and ``bench/seams.py`` remain stand-alone scripts.
"""
