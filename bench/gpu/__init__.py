"""The GPU run, prepared: ``fetch_wheels.sh`` downloads here what the GPU machine lacks; ``run.py`` measures there
(raw batched forward, the infer stage on ``--cluster cuda``) and prints one JSON; ``run.py --cpu`` runs the same
here. See bench/gpu/README.md."""
