"""The TF1 optimizers built with mgrt's API: the graph TensorFlow builds, the same training.

tests/fixtures/make_build_optimizers.py built the same models (its ``build`` function, run here
with ``mgrt.compat.v1``) in TensorFlow, for GradientDescent, Momentum (and Nesterov), Adam,
RMSProp (plain, and centered with momentum), Adagrad and Adadelta, for ref and resource
variables, with a dense gradient and an IndexedSlices gradient with a repeated index, through
``apply_gradients`` (gradients written by hand) and through ``minimize`` (symbolic gradients);
it recorded the graph (node names, op types, inputs), slot names, the optimizer's variables
and every variable after each training step, and for Adam a checkpoint.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt import errors
from mgrt.protos import meta_graph_pb2

FIXTURES = Path(__file__).parent / "fixtures"
FOLDER = FIXTURES / "build_optimizers"
DOC = json.loads((FOLDER / "build_optimizers.json").read_text())
NPZ = np.load(FOLDER / "build_optimizers.npz", allow_pickle=False)

sys.path.insert(0, str(FIXTURES))
import make_build_optimizers as mk  # noqa: E402

CASES = mk.cases()
IDS = [mk.case_key(*c) for c in CASES]


def _values(sess):
    return {v.op.name: sess.run(v) for v in tf.global_variables()}


def _close(got, want, what):
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.mark.parametrize("case,resource,mode", CASES, ids=IDS)
def test_graph_as_tensorflow(case, resource, mode):
    """Node names, op types and inputs (control inputs too), in TensorFlow's order."""
    rec = DOC["cases"][mk.case_key(case, resource, mode)]
    g = tf.Graph()
    with g.as_default():
        opt, train_op, _ = mk.build(tf, case, resource, mode)
        got = mk.describe_graph(g.as_graph_def())
        assert train_op.name == rec["train_op"]
        assert opt.get_slot_names() == rec["slot_names"]
        assert [v.name for v in opt.variables()] == rec["optimizer_variables"]
        assert [v.name for v in tf.global_variables()] == rec["global_variables"]
        assert [v.name for v in tf.trainable_variables()] == rec["trainable_variables"]
        assert [o.name for o in tf.get_collection("train_op")] == rec["train_op_collection"]
        slots = {f"{v.op.name}:{s}": opt.get_slot(v, s).name
                 for v in tf.trainable_variables() for s in opt.get_slot_names()
                 if opt.get_slot(v, s) is not None}
        assert slots == rec["slots"]
    assert got == rec["nodes"]


@pytest.mark.parametrize("case,resource,mode", CASES, ids=IDS)
def test_trains_as_tensorflow(case, resource, mode):
    key = mk.case_key(case, resource, mode)
    rec = DOC["cases"][key]
    g = tf.Graph()
    with g.as_default():
        _, train_op, loss = mk.build(tf, case, resource, mode)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            losses = []
            for step in range(DOC["steps"]):
                if loss is not None:
                    losses.append(float(sess.run(loss)))
                sess.run(train_op)
                values = _values(sess)
                assert sorted(values) == sorted(
                    k.split("/", 2)[2] for k in NPZ.files if k.startswith(f"{key}/{step}/"))
                for name, value in values.items():
                    _close(value, NPZ[f"{key}/{step}/{name}"], f"{key} step {step}: {name}")
    np.testing.assert_allclose(losses, rec["losses"], rtol=2e-5)


def test_every_update_op_type_is_built():
    """The dense, sparse, ref and resource update ops TensorFlow uses all appear."""
    types = {n[1] for rec in DOC["cases"].values() for n in rec["nodes"]}
    for t in ("ApplyGradientDescent", "ResourceApplyGradientDescent", "ScatterSub",
              "ResourceScatterAdd", "ApplyMomentum", "ResourceApplyMomentum",
              "SparseApplyMomentum", "ResourceSparseApplyMomentum", "ApplyAdam",
              "ResourceApplyAdam", "ScatterAdd", "ApplyRMSProp", "ApplyCenteredRMSProp",
              "SparseApplyRMSProp", "SparseApplyCenteredRMSProp", "ResourceApplyRMSProp",
              "ResourceSparseApplyCenteredRMSProp", "ApplyAdagrad", "SparseApplyAdagrad",
              "ResourceApplyAdagrad", "ResourceSparseApplyAdagrad", "ApplyAdadelta",
              "SparseApplyAdadelta", "ResourceApplyAdadelta", "ResourceSparseApplyAdadelta",
              "UnsortedSegmentSum", "Unique", "AssignAdd"):
        assert t in types, t


# --- checkpoints, both ways -------------------------------------------------------------------
@pytest.mark.parametrize("resource", [False, True], ids=["ref", "resource"])
def test_restores_tensorflow_adam_checkpoint_and_continues(resource):
    """TensorFlow's checkpoint after three Adam steps (slots ``w/Adam``, ``w/Adam_1``,
    ``beta1_power``...) restores into mgrt's graph; two more steps give TensorFlow's values."""
    key = mk.case_key("adam", resource, "apply")
    g = tf.Graph()
    with g.as_default():
        _, train_op, _ = mk.build(tf, "adam", resource, "apply")
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, str(FOLDER / f"tf_ckpt_{key}" / "model"))
            for name, value in _values(sess).items():
                _close(value, NPZ[f"{key}/{DOC['steps'] - 1}/{name}"], f"restored {name}")
            for _ in range(DOC["more_steps"]):
                sess.run(train_op)
            for name, value in _values(sess).items():
                _close(value, NPZ[f"{key}/more/{name}"], f"continued {name}")


@pytest.mark.parametrize("resource", [False, True], ids=["ref", "resource"])
def test_tensorflow_restored_mgrt_adam_checkpoint(resource, tmp_path):
    """mgrt's checkpoint after three Adam steps: mgrt still writes what the committed one
    holds, and TensorFlow (make_build_optimizers.py --tf-reads-mgrt) restored the committed
    one into its own graph, read TensorFlow's own values back and trained on identically."""
    key = mk.case_key("adam", resource, "apply")
    paths = mk.write_mgrt_checkpoints(tmp_path)
    fresh = tf.train.NewCheckpointReader(paths[key])
    committed = tf.train.NewCheckpointReader(str(FOLDER / f"mgrt_ckpt_{key}" / "model"))
    names = sorted(committed.get_variable_to_shape_map())
    assert sorted(fresh.get_variable_to_shape_map()) == names
    for name in names:
        _close(fresh.get_tensor(name), committed.get_tensor(name), name)
    reads = json.loads((FOLDER / "tf_reads_mgrt.json").read_text())[key]
    tf_npz = np.load(FOLDER / "tf_reads_mgrt.npz", allow_pickle=False)
    assert reads["restored"] and reads["checkpoint_keys"] == names
    assert {"w/Adam", "w/Adam_1", "emb/Adam", "emb/Adam_1", "beta1_power", "beta2_power",
            "global_step"} <= set(names)
    for name in names:
        _close(tf_npz[f"{key}/restored/{name}"], NPZ[f"{key}/{DOC['steps'] - 1}/{name}"],
               f"TF restored {name}")
        _close(tf_npz[f"{key}/more/{name}"], NPZ[f"{key}/more/{name}"], f"TF continued {name}")
        _close(tf_npz[f"{key}/meta_more/{name}"], NPZ[f"{key}/more/{name}"],
               f"TF trained mgrt's exported graph: {name}")
    # the committed training graph TensorFlow imported is the one mgrt builds today
    assert reads["meta_train_op"] == "Adam"
    fresh_meta = meta_graph_pb2.MetaGraphDef.FromString(Path(paths[key] + ".meta").read_bytes())
    old_meta = meta_graph_pb2.MetaGraphDef.FromString(
        (FOLDER / f"mgrt_ckpt_{key}" / "model.meta").read_bytes())
    assert mk.describe_graph(fresh_meta.graph_def) == mk.describe_graph(old_meta.graph_def)


# --- the API --------------------------------------------------------------------------------
def test_slots_and_variables():
    g = tf.Graph()
    with g.as_default():
        w = tf.Variable(np.ones((2, 2), np.float32), name="w")
        v = tf.Variable(np.ones((3,), np.float32), name="b")
        opt = tf.train.AdamOptimizer(0.1)
        assert opt.get_slot_names() == [] and opt.get_slot(w, "m") is None
        opt.apply_gradients([(tf.ones_like(w), w), (None, v)])
        assert opt.get_slot(v, "m") is None  # no gradient: no slot
        assert opt.get_slot(w, "m").name == "w/Adam:0"
        assert opt.get_slot(w, "v").name == "w/Adam_1:0"
        assert opt.get_slot(w, "nope") is None
        assert not opt.get_slot(w, "m").trainable
        assert opt.get_slot(w, "m").get_shape().as_list() == [2, 2]


def test_learning_rate_tensor_and_callable_and_float64():
    g = tf.Graph()
    with g.as_default():
        w = tf.Variable(np.array([1.0, 2.0]), name="w")  # float64
        lr = tf.placeholder(tf.float32, [], name="lr")
        op = tf.train.GradientDescentOptimizer(lr).apply_gradients(
            [(tf.constant([1.0, 1.0], tf.float64), w)])
        assert "GradientDescent/update_w/Cast" in [o.name for o in g.get_operations()]
        op2 = tf.train.MomentumOptimizer(lambda: 0.5, 0.0, name="M").apply_gradients(
            [(tf.constant([1.0, 1.0], tf.float64), w)])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            sess.run(op, {lr: 0.25})
            np.testing.assert_allclose(sess.run(w), [0.75, 1.75])
            sess.run(op2)
            np.testing.assert_allclose(sess.run(w), [0.25, 1.25])


def test_bad_input():
    g = tf.Graph()
    with g.as_default():
        w = tf.Variable(np.ones((2, 2), np.float32), name="w")
        i = tf.Variable(np.ones((2,), np.int32), name="i")
        opt = tf.train.GradientDescentOptimizer(0.1)
        with pytest.raises(ValueError, match="No variables provided"):
            opt.apply_gradients([])
        with pytest.raises(ValueError, match="No gradients provided for any variable"):
            opt.apply_gradients([(None, w)])
        with pytest.raises(TypeError, match="dtype"):
            opt.apply_gradients([(tf.constant(np.ones((2, 2))), w)])  # float64 for float32
        with pytest.raises(ValueError, match="incompatible"):
            opt.apply_gradients([(tf.ones([3]), w)])
        with pytest.raises(TypeError, match="Gradient must be"):
            opt.apply_gradients([(object(), w)])
        with pytest.raises(NotImplementedError, match="unsupported type"):
            opt.apply_gradients([(tf.ones([2, 2]), tf.ones([2, 2]))])
        with pytest.raises(ValueError, match="Invalid type int32"):
            opt.compute_gradients(tf.reduce_sum(i), var_list=[i])
        with pytest.raises(ValueError, match="gate_gradients"):
            opt.compute_gradients(tf.reduce_sum(w), gate_gradients=7)
        with pytest.raises(ValueError, match="initial_accumulator_value must be positive"):
            tf.train.AdagradOptimizer(0.1, initial_accumulator_value=0.0)
        with pytest.raises(ValueError, match="Must specify the optimizer name"):
            tf.train.GradientDescentOptimizer(0.1, name="")
        unrelated = tf.Variable(1.0, name="u")
        with pytest.raises(ValueError, match="No gradients provided"):
            opt.minimize(tf.reduce_sum(w) * 0 + tf.constant(1.0), var_list=[unrelated])


def test_uninitialized_slot_is_tensorflow_error():
    g = tf.Graph()
    with g.as_default():
        w = tf.Variable(np.ones((2,), np.float32), name="w")
        op = tf.train.AdamOptimizer().apply_gradients([(tf.ones([2]), w)])
        with tf.Session() as sess:
            sess.run(w.initializer)
            with pytest.raises(errors.FailedPreconditionError):
                sess.run(op)
