"""The parity tier's one comparison: jdistill's array against another library's, within a
tolerance relative to the reference's largest entry."""

import numpy as np

ERRORS = []  # (what, error) of every comparison made, for reporting the largest


def assert_close(what, got, want, tolerance, library):
    """``max |got - want| / max |want| <= tolerance``, shapes equal, ``want`` not all zeros."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = np.max(np.abs(want))
    assert scale > 0, f"{what}: the reference is all zeros; the inputs do not exercise the loss"
    error = np.max(np.abs(got - want)) / scale
    ERRORS.append((what, float(error)))
    assert error <= tolerance, (
        f"{what}: max |jdistill - {library}| / max |{library}| = {error:.2e} > {tolerance:.0e}"
    )
