"""The TF1 optimizers train on a (simulated) GPU as they trained in TensorFlow.

The recordings of tests/test_optimizers.py (tests/fixtures/optimizers: for each optimizer of
``tf.compat.v1.train``, ref and resource variables, a tiny model with a dense layer and two
embeddings, the losses of three steps and every variable after them) run here with every node
of the imported graph asked onto ``/device:GPU:0`` (``MGRT_SIMULATED_GPUS`` through the
``gpus`` fixture; the real GPU under ``pytest -m gpu``). Nodes without a GPU kernel soft-place
to the CPU; the variables, their slots and the optimizer's update nodes (Apply*,
ResourceApply*, SparseApply*, Scatter*, Assign*) must be on the GPU, except for AdagradDA,
which has no GPU kernel (as in TensorFlow): its variables and updates go to the CPU together.
Losses and variables must match TensorFlow's (rtol 1e-5); the dense updates run as numba.cuda
kernels (the simulator's, for these small tensors), and every variable on the GPU keeps the same
buffer from step to step (updated in place: nothing read in a step still holds it).
"""

import json
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.kernels_cpu.state_ops import _var_key
from mgrt.runtime.kernel_registry import KernelNode

FOLDER = Path(__file__).parent / "fixtures" / "optimizers"
DOC = json.loads((FOLDER / "optimizers.json").read_text())
NPZ = np.load(FOLDER / "optimizers.npz", allow_pickle=False)
CASES = sorted(DOC["cases"])

VARIABLE_OPS = {"VariableV2", "Variable", "VarHandleOp"}
CPU_ONLY = {"adagrad_da_ref", "adagrad_da_resource"}  # AdagradDA: no GPU kernel


def _feed():
    return {name: NPZ[key] for name, key in DOC["feeds"].items()}


def _variables(graph):
    return {v.name.rsplit(":", 1)[0]: v for v in graph.get_collection("variables")}


def _tol(value):
    return (1e-5, 1e-6) if value.dtype == np.float32 else (0, 0)


def _on_gpu(graph):
    for op in graph.get_operations():
        op._set_device("/device:GPU:0")


def _update_op(op_type):
    return ("Apply" in op_type or op_type.startswith(("Scatter", "ResourceScatter", "Assign"))
            and op_type != "Assert")


def _gpu_buffer_ids(sess, placement, variables):
    """``{variable: id of its buffer}`` for the variables on a GPU (checked to be buffers of
    that GPU)."""
    out = {}
    for name, v in variables.items():
        op = v.op
        device = placement.device_of(op)
        if device.device_type != "GPU":
            continue
        store = sess._state.resources if op.type == "VarHandleOp" else sess._state.variables
        buf = store[_var_key(KernelNode.from_operation(op))]
        assert device.is_buffer(buf), name
        out[name] = id(buf)
    return out


@pytest.fixture
def launches(monkeypatch):
    """Counts the optimizer kernels' numba launches."""
    from mgrt.kernels_gpu import state_ops

    calls = []
    real = state_ops.launch

    def counting(device, kernel, n, *args, **kw):
        calls.append(n)
        return real(device, kernel, n, *args, **kw)

    monkeypatch.setattr(state_ops, "launch", counting)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_trains_on_a_gpu_as_in_tensorflow(case, gpus, launches):
    rec = DOC["cases"][case]
    feed = _feed()
    g = tf.Graph()
    with g.as_default():
        tf.train.import_meta_graph(str(FOLDER / rec["meta"]))
        _on_gpu(g)
        variables = _variables(g)
        loss = tf.get_collection("loss")[0]
        train_op = tf.get_collection("train_op")[0]
        with tf.Session() as sess:
            placement = sess.placement()
            want_type = "CPU" if case in CPU_ONLY else "GPU"
            for name, v in variables.items():
                if name == "global_step" or name.endswith("_power"):
                    continue  # int64 step and the beta powers: wherever their kernels are
                op = v.op
                assert op.type in VARIABLE_OPS
                assert placement.device_of(op).device_type == want_type, (name, op.type)
            checked = {v.op.name for n, v in variables.items()
                       if n != "global_step" and not n.endswith("_power")}
            updates = [op for op in g.get_operations() if _update_op(op.type)
                       and not op.name.startswith("save/") and op.inputs
                       and op.inputs[0].op.name in checked]
            assert updates
            for op in updates:  # the updates of the model's variables and slots
                assert placement.device_of(op).device_type == want_type, (op.name, op.type)
            if case not in CPU_ONLY:
                apply_types = {op.type for op in updates if "Apply" in op.type}
                assert apply_types, case
            for v in g.get_collection("variables"):
                name = v.name.rsplit(":", 1)[0]
                sess.run(v.initializer, {v.initial_value: NPZ[f"{case}/init/{name}"]})
            losses = []
            buffers = []
            for _ in range(DOC["steps"]):
                losses.append(float(sess.run(loss, feed)))
                sess.run(train_op, feed)
                buffers.append(_gpu_buffer_ids(sess, placement, variables))
            final_loss = float(sess.run(loss, feed))
            after = {name: sess.run(v) for name, v in variables.items()}
    if case not in CPU_ONLY:
        # the variables' buffers live on the GPU, and the updates write them in place: the
        # same buffers after every step (nothing read in a step holds them when they update)
        assert buffers[0] and all(b == buffers[0] for b in buffers)
    if case not in CPU_ONLY:  # the dense updates ran as numba.cuda kernels
        assert launches
    np.testing.assert_allclose(losses, rec["losses"], rtol=1e-5)
    assert final_loss == pytest.approx(rec["final_loss"], rel=1e-5)
    for name, value in after.items():
        want = NPZ[f"{case}/final/{name}"]
        assert value.dtype == want.dtype, (name, value.dtype, want.dtype)
        assert value.shape == want.shape, (name, value.shape, want.shape)
        rtol, atol = _tol(want)
        np.testing.assert_allclose(value, want, rtol=rtol, atol=atol, err_msg=f"{case}: {name}")


@pytest.mark.parametrize("case", ["adam_ref", "adam_resource", "momentum_resource"])
def test_loss_and_train_op_in_one_run_on_a_gpu(case, gpus):
    """The loss fetched with the train op is the loss before the update, on the GPU too (the
    updates write the buffers in place only where no value read in the step still holds
    them)."""
    rec = DOC["cases"][case]
    feed = _feed()
    g = tf.Graph()
    with g.as_default():
        tf.train.import_meta_graph(str(FOLDER / rec["meta"]))
        _on_gpu(g)
        loss = tf.get_collection("loss")[0]
        train_op = tf.get_collection("train_op")[0]
        with tf.Session() as sess:
            for v in g.get_collection("variables"):
                name = v.name.rsplit(":", 1)[0]
                sess.run(v.initializer, {v.initial_value: NPZ[f"{case}/init/{name}"]})
            losses = [float(sess.run([loss, train_op], feed)[0]) for _ in range(DOC["steps"])]
            after = {n: sess.run(v) for n, v in _variables(g).items()}
    np.testing.assert_allclose(losses, rec["losses"], rtol=1e-5)
    for name, value in after.items():
        rtol, atol = _tol(value)
        np.testing.assert_allclose(value, NPZ[f"{case}/final/{name}"], rtol=rtol, atol=atol,
                                   err_msg=f"{case}: {name}")
