"""Matrix products on ONNX Runtime's threads (RISE's fold) equal numpy's in float64, for the operand layouts RISE
hands over (transposed views included)."""

from __future__ import annotations

import numpy as np
import pytest

from onnxplain.server.engine.products import matrix_product


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("rows", "inner", "columns"), [(1, 16, 784), (10, 40, 784), (1000, 24, 3136)])
def test_the_product_equals_numpys_in_float64(threads, rows, inner, columns) -> None:
    rng = np.random.default_rng(rows + inner)
    scores = rng.normal(size=(inner, rows)).astype(np.float32)  # RISE's (masks, targets) scores, transposed below
    masks = rng.random((inner, columns)).astype(np.float32)
    product = matrix_product(scores.T, masks, threads)
    expected = scores.T.astype(np.float64) @ masks.astype(np.float64)
    assert product.shape == (rows, columns) and product.dtype == np.float32
    np.testing.assert_allclose(product, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_integer_and_double_operands_are_taken_as_float32() -> None:
    left, right = np.arange(6).reshape(2, 3), np.eye(3, dtype=np.float64)
    np.testing.assert_array_equal(matrix_product(left, right, 1), left.astype(np.float32))
