"""``tf.compat.v1.losses``: loss functions that build TensorFlow's subgraphs and add their result
to the ``LOSSES`` collection (``mgrt.runtime.api.losses``)."""

from mgrt.runtime.api.losses import (Reduction, absolute_difference, add_loss,  # noqa: F401
                                     compute_weighted_loss, get_losses,
                                     get_regularization_loss, get_regularization_losses,
                                     get_total_loss, hinge_loss, huber_loss, log_loss,
                                     mean_squared_error, sigmoid_cross_entropy,
                                     softmax_cross_entropy, sparse_softmax_cross_entropy)

__all__ = [
    "Reduction", "absolute_difference", "add_loss", "compute_weighted_loss", "get_losses",
    "get_regularization_loss", "get_regularization_losses", "get_total_loss", "hinge_loss",
    "huber_loss", "log_loss", "mean_squared_error", "sigmoid_cross_entropy",
    "softmax_cross_entropy", "sparse_softmax_cross_entropy",
]
