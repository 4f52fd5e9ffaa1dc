"""The zoo's parameter counts match the seeds' tables, and unknown names fail clearly."""

from __future__ import annotations

import pytest

from cnnlab.models import build_model


@pytest.mark.parametrize(
    ("name", "shape", "classes", "params"),
    [
        ("F1", (28, 28, 1), 10, 89_546),  # the seed's table prints 88,546 (a typo in one row)
        ("F2", (28, 28, 1), 10, 333_526),
        ("M1", (28, 28, 1), 10, 93_322),
        ("M4", (28, 28, 1), 10, 61_706),  # the text's 14,706 ignores the input depth
        ("C1", (32, 32, 3), 10, 890_410),
    ],
)
def test_parameter_counts_match_the_seeds(name: str, shape, classes: int, params: int) -> None:
    assert build_model(name, shape, classes).count_params() == params


def test_model_takes_raw_pixels_and_outputs_probabilities() -> None:
    import numpy as np

    model = build_model("F1", (28, 28, 1), 10)
    out = model.predict(np.full((2, 28, 28, 1), 255, dtype="float32"), verbose=0)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_unknown_model_or_option() -> None:
    with pytest.raises(ValueError, match="unknown model 'X'; allowed: C1"):
        build_model("X", (28, 28, 1), 10)
    with pytest.raises(ValueError, match="does not take these options"):
        build_model("F1", (28, 28, 1), 10, dropout=0.5)
