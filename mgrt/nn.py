"""``tf.compat.v1.nn``: activations, convolutions, pooling, dropout, normalization and the cross
entropies, built with TensorFlow's op types, node names and attrs (``mgrt.runtime.api.nn_ops``).
"""

from mgrt.runtime.api.nn_ops import (  # noqa: F401  (TopKV2: the namedtuple top_k returns)
    TopKV2, avg_pool, batch_normalization, bias_add, conv2d, conv2d_backprop_filter,
    conv2d_backprop_input, conv2d_transpose, crelu,
    depthwise_conv2d, depthwise_conv2d_native, dropout, elu, fused_batch_norm,
    in_top_k, l2_loss, l2_normalize, leaky_relu, local_response_normalization, log_softmax, lrn,
    max_pool, moments, relu, relu6, relu_layer, selu, sigmoid, sigmoid_cross_entropy_with_logits,
    softmax, softmax_cross_entropy_with_logits, softmax_cross_entropy_with_logits_v2, softplus,
    softsign, sparse_softmax_cross_entropy_with_logits, tanh, top_k, xw_plus_b,
    atrous_conv2d, max_pool_with_argmax, separable_conv2d, weighted_cross_entropy_with_logits)
from mgrt.runtime.api.embedding_ops import embedding_lookup  # noqa: E402,F401

__all__ = [
    "avg_pool", "batch_normalization", "bias_add", "conv2d", "conv2d_backprop_filter",
    "conv2d_backprop_input", "conv2d_transpose", "crelu",
    "depthwise_conv2d", "depthwise_conv2d_native", "dropout", "elu", "embedding_lookup",
    "fused_batch_norm", "in_top_k", "l2_loss", "l2_normalize", "leaky_relu",
    "local_response_normalization", "log_softmax", "lrn", "max_pool", "moments", "relu", "relu6",
    "relu_layer", "selu", "sigmoid", "sigmoid_cross_entropy_with_logits", "softmax",
    "softmax_cross_entropy_with_logits", "softmax_cross_entropy_with_logits_v2", "softplus",
    "softsign", "sparse_softmax_cross_entropy_with_logits", "tanh", "top_k", "xw_plus_b",
    "atrous_conv2d", "max_pool_with_argmax", "separable_conv2d",
    "weighted_cross_entropy_with_logits",
]
