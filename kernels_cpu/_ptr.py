"""``at(arr, i)``: a pointer to ``arr[i]`` that the optimizer cannot see through, for the
grouped direct-convolution loops (_gemm_loops ``gatherg_*``).

Why: those loops read U consecutive elements from each row's position, ``p[0] .. p[U - 1]``.
Given the plain address ``src + (row + offset) * 4``, LLVM folds the sum into every load as a
base + index * 4 + displacement operand, and on Intel cores an FMA whose memory operand has
an index register is split in two micro-ops (it is "unlaminated"): the loop then issues twice
the micro-ops per FMA that it needs, and its rate is bound by the front end, not by the FMA
units. Passed through an empty inline-assembly statement, the pointer is an opaque register,
and the loads become base + displacement: one micro-op per FMA with its broadcast load
(measured: the CNN's 800-deep input gradient 10% faster on one thread, the first layer's
filter gradient 22%).
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def at(typingctx, arr, idx):
    if not (isinstance(arr, types.Array) and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.gep(ary.data, [index])
        opaque = ir.FunctionType(ptr.type, [ptr.type])
        return builder.asm(opaque, "", "=r,0", [ptr], side_effect=False)

    return types.CPointer(arr.dtype)(arr, idx), codegen
