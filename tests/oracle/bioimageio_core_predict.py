"""bioimageio.core's prediction of packages on tiles, run in .venv-oracle (scripts/oracle_env.sh).

    .venv-oracle/bin/python tests/oracle/bioimageio_core_predict.py JOBS.json

JOBS.json is a list of ``{"rdf": PATH, "input": NPY, "output": NPY}``: each package predicts its input tile with
its own preprocessing (statistics measured over the tile), without the input padding and output cropping
bioimageio.core adds for a declared halo (segpipe measures and predicts the tile as it is), and no
postprocessing; the output tensor is saved to ``output``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from bioimageio.core import create_prediction_pipeline, load_model_description
from bioimageio.core.digest_spec import create_sample_for_model


def predict(rdf: str, tile: np.ndarray) -> np.ndarray:
    """The package's first output on ``tile`` (1, C, Y, X)."""
    model = load_model_description(rdf, perform_io_checks=False)
    pipeline = create_prediction_pipeline(model)
    name = str(model.inputs[0].id)
    sample = create_sample_for_model(model, inputs={name: tile}, sample_id="tile")
    output = pipeline.predict_sample_without_blocking(
        sample, skip_postprocessing=True, skip_input_padding=True, skip_output_cropping=True
    )
    return np.asarray(output.members[str(model.outputs[0].id)].data.values)


def main(jobs_path: str) -> None:
    with open(jobs_path) as handle:
        jobs = json.load(handle)
    for job in jobs:
        np.save(job["output"], predict(job["rdf"], np.load(job["input"])))


if __name__ == "__main__":
    main(sys.argv[1])
