"""A bioimage.io package's own test: segpipe's prediction on its test input against its expected output.

The test input is scaled by the card's preprocessing with statistics measured over the whole test input (as
segpipe measures a whole image), run through segpipe's ``Predictor`` on the CPU, and the package's own output
activation applied; the result must match the expected output within the package's reproducibility tolerance
(``segpipe.models.package.DEFAULT_TOLERANCE`` when it declares none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from segpipe.errors import ModelError
from segpipe.models.cache import build_model, model_payload
from segpipe.models.package import Package, Tolerance, read_array, read_package
from segpipe.models.predictor import Predictor
from segpipe.models.ref import ModelRef
from segpipe.normalize import BandStats
from segpipe.postprocessing import Activation
from segpipe.preprocessing import preprocess, stats_needed

CPU = torch.device("cpu")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of a package's test.

    Attributes:
        uri: the package.
        passed: within tolerance.
        max_abs_diff: largest absolute difference from the expected output (``inf`` when the shapes differ).
        tolerance: what the package allows.
        mismatched: elements beyond the tolerance.
        detail: why it failed, when the shapes differ.
    """

    uri: str
    passed: bool
    max_abs_diff: float
    tolerance: Tolerance
    mismatched: int = 0
    detail: str = ""

    def line(self) -> str:
        """``PASS`` or ``FAIL``, the package and the largest difference, in one line."""
        verdict = "PASS" if self.passed else "FAIL"
        why = f" ({self.detail})" if self.detail else ""
        return (
            f"{verdict} {self.uri}: max abs difference {self.max_abs_diff:.3g} from its expected output "
            f"(tolerance {self.tolerance.absolute:g} abs, {self.tolerance.relative:g} rel; "
            f"{self.mismatched} elements beyond){why}"
        )


def package_prediction(ref: ModelRef, package: Package, payload: bytes, image: np.ndarray) -> np.ndarray:
    """Segpipe's output on one (1, C, H, W) ``image`` with the package's activation applied (as its test has it)."""
    card = ref.card
    bands = image.reshape(image.shape[1], -1)
    stats = BandStats.from_samples(bands, stats_needed(card.input_steps))
    pixels = preprocess(image[0], card.input_steps, stats)[None]
    raw_card = replace(card, postprocessing=Activation("softmax"))  # softmax's logits pass through unchanged
    predictor = Predictor(build_model(ref, payload, CPU), raw_card, CPU, channels_last=False)
    raw = predictor.predict(pixels).astype(np.float64)
    if package.activation == "softmax":
        shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))
    if package.activation == "sigmoid":
        probability = 1.0 / (1.0 + np.exp(-raw))
        return np.asarray(probability)
    return raw


def check_package(ref: ModelRef, trust_code: bool = False) -> CheckResult:
    """Run the package ``ref`` on its test input; compare with its expected output.

    Raises:
        ModelError: ``ref`` is not a bioimage.io package, or its test tensors cannot be read.
    """
    if ref.format != "bioimageio":
        raise ModelError(f"{ref.uri}: not a bioimage.io package (a {ref.format} model has no test of its own)")
    payload = model_payload(ref)
    package = read_package(payload, ref.uri, trust_code)
    try:
        image = read_array(payload, package.test_input).astype(np.float32)
        expected = read_array(payload, package.test_output).astype(np.float64)
    except ModelError as exc:
        raise ModelError(f"{ref.uri}: {exc}") from None
    if image.ndim != 4 or image.shape[0] != 1:
        raise ModelError(f"{ref.uri}: test input of shape {image.shape}, expected (1, C, Y, X)")
    got = package_prediction(ref, package, payload, image)
    if got.shape != expected.shape:
        detail = f"output {got.shape}, expected {expected.shape}"
        return CheckResult(ref.uri, False, float("inf"), package.tolerance, int(expected.size), detail)
    diff = np.abs(got - expected)
    tol = package.tolerance
    mismatched = int(np.count_nonzero(diff > tol.absolute + tol.relative * np.abs(expected)))
    passed = mismatched <= tol.mismatched_per_million * expected.size / 1e6
    return CheckResult(ref.uri, passed, float(diff.max()) if diff.size else 0.0, tol, mismatched)
