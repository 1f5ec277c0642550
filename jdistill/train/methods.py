"""Deprecated: the method registry moved to :mod:`jdistill.methods`; this alias will be removed."""

import warnings

from jdistill.methods import (  # noqa: F401
    METHODS,
    build_method,
    default_weights,
    feature_shapes,
    parse_methods,
    resolve_weights,
)

warnings.warn(
    "jdistill.train.methods is deprecated; import from jdistill.methods instead",
    DeprecationWarning,
    stacklevel=2,
)
