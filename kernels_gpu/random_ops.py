"""GPU kernels of the random ops, with TensorFlow's numbers: RandomUniform, RandomStandardNormal,
TruncatedNormal, RandomUniformInt, RandomShuffle and Multinomial.

To give exactly the values TensorFlow's seeded ops give (and the CPU kernels give), the numbers
are drawn on the host by the CPU kernel (kernels_cpu/random_ops.py: TensorFlow's Philox stream,
its conversions, Box-Muller and truncation) and moved to the device with ``xp.asarray``: an
implicit put of the result, once per run. These ops run in initializers (a variable's initial
value), once per training, so the copy does not matter. The values are TensorFlow's CPU values
(the ones its recordings and checkpoints hold) on either device; TensorFlow's own GPU kernels
split the Philox stream among their threads in another way, so seeded values can differ between
its CPU and GPU, and mgrt does not follow it there.

The generator state is the CPU kernel's: the CPU builder is called with the same ``ctx``, so a
node's stream lives in ``ctx.state.resources`` under the same key (``("philox", node name)``)
whether the node runs on the CPU or on a GPU, successive runs continue it, and all the plans of
one Session share it, as TensorFlow shares a stateful kernel.

RandomShuffle draws its permutation on the host from the CPU kernel's generator (the same
object and the same draw as on the CPU) and gathers the rows on the device. Multinomial (its
logits on the device) fetches them and runs the CPU kernel.
"""

import numpy as np

from mgrt.kernels_cpu import random_ops as _cpu
from mgrt.kernels_gpu import GPU_FLOAT, GPU_NUM_BOOL, cpu_builder, xp_of
from mgrt.kernels_gpu.array_ops import _gpu
from mgrt.runtime import dtypes

_INT_OUT = [dtypes.int32, dtypes.int64]


def _put_outputs(node, ctx):
    """The CPU kernel, its result put on the device (an implicit put)."""
    cpu = cpu_builder(node)(node, ctx)
    xp = xp_of(node, ctx)

    def run(*args):
        return tuple(xp.asarray(o) for o in cpu(*args))

    return run


_gpu(["RandomUniform", "RandomStandardNormal", "TruncatedNormal"],
     types={"dtype": GPU_FLOAT}, host=("shape",))(_put_outputs)
# an int32 result lives in host memory: the CPU kernel alone (the routing of _gpu)
_gpu("RandomUniformInt", types={"Tout": _INT_OUT}, host=("shape", "minval", "maxval"))(
    _put_outputs)


@_gpu("RandomShuffle", types={"T": GPU_NUM_BOOL})
def _random_shuffle(node, ctx):
    xp = xp_of(node, ctx)

    def run(value):
        if value.ndim == 0:
            return (value.copy(),)
        perm = _cpu._numpy_rng(ctx, node).permutation(value.shape[0])  # as the CPU kernel
        return (value[xp.asarray(perm.astype(np.int64, copy=False))],)

    return run


def _always(node, in_host, out_host):
    return True


@_gpu("Multinomial", types={"T": GPU_FLOAT, "output_dtype": _INT_OUT},
      host=("num_samples",), host_path=_always)
def _multinomial(node, ctx):  # routed through via_host: logits fetched, the CPU kernel draws
    raise AssertionError("unreachable")

