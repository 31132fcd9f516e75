"""The graph-building half of ``tf.compat.v1`` (issue 6): building functions by op family and
the static shape functions of their ops. ``mgrt.compat.v1`` and ``mgrt.nn`` / ``mgrt.losses``
/ ``mgrt.train`` / ``mgrt.summary`` re-export what users call.

Every function builds nodes through ``mgrt.runtime.ops.apply_op``, with TensorFlow's op types,
attrs and names, so that a graph built here runs in TensorFlow.
"""

from mgrt.runtime.api import math_ops  # noqa: F401  (first: Tensor operators)
from mgrt.runtime.api import array_ops  # noqa: F401
from mgrt.runtime.api import state_ops  # noqa: F401
from mgrt.runtime.api import random_ops  # noqa: F401
from mgrt.runtime.api import init_ops  # noqa: F401
from mgrt.runtime.api import variable_scope  # noqa: F401
from mgrt.runtime.api import control_flow_ops  # noqa: F401
from mgrt.runtime.api import nn_ops  # noqa: F401
from mgrt.runtime.api import losses  # noqa: F401
