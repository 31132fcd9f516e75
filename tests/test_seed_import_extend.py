"""The seeds' "Import and extend the graph" example runs as written, with only the import
changed, and trains as TensorFlow trained.

tests/fixtures/make_seed_import_extend.py holds the seed's code (taking the ``tf`` module:
that is the one line that differs); TensorFlow ran it and committed the inference graph
(``my-model-10000.meta``) and checkpoint it wrote, and the loss of each training step after
importing, restoring and extending them (labels, ``tf.losses.sparse_softmax_cross_entropy``,
``tf.summary.scalar``, ``GradientDescentOptimizer(0.01).minimize``).
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np

import mgrt.compat.v1 as tf
from mgrt.protos import meta_graph_pb2

FIXTURES = Path(__file__).parent / "fixtures"
FOLDER = FIXTURES / "seed_import_extend"
DOC = json.loads((FOLDER / "seed.json").read_text())
sys.path.insert(0, str(FIXTURES))
import make_seed_import_extend as seed  # noqa: E402


def _meta_nodes(path):
    m = meta_graph_pb2.MetaGraphDef()
    m.ParseFromString(Path(path).read_bytes())
    return [(n.name, n.op) for n in m.graph_def.node], m


def _check_run(losses, added, summary):
    np.testing.assert_allclose(losses, DOC["losses"], rtol=1e-5)
    assert losses[-1] < losses[0]  # it trained
    # the nodes of the extension outside the gradient subgraph are TensorFlow's
    want = [tuple(x) for x in DOC["added"] if not x[0].startswith("gradients/")
            and x[1] != "Const"]
    got = [tuple(x) for x in added if not x[0].startswith("gradients/") and x[1] != "Const"]
    assert got == want
    for name in ("loss", "GradientDescent", "GradientDescent/update_hidden1/weights/"
                 "ApplyGradientDescent", "sparse_softmax_cross_entropy_loss/value"):
        assert name in [a[0] for a in added]
    s = tf.summary.Summary.FromString(summary)
    want_s = tf.summary.Summary.FromString(bytes(DOC["summary"]))
    assert [v.tag for v in s.value] == [v.tag for v in want_s.value] == ["loss"]
    np.testing.assert_allclose(s.value[0].simple_value, want_s.value[0].simple_value,
                               rtol=1e-5)


def test_import_tensorflow_meta_restore_extend_and_train():
    g = tf.Graph()
    with g.as_default():
        losses, added, summary = seed.import_and_extend(tf, FOLDER)
    _check_run(losses, added, summary)


def test_inference_graph_written_by_mgrt_as_tensorflow(tmp_path):
    """The seed's first half with mgrt writes TensorFlow's graph (nodes, variables, saver)."""
    g = tf.Graph()
    with g.as_default():
        seed.write_inference_graph(tf, tmp_path)
    got, got_meta = _meta_nodes(tmp_path / "my-model-10000.meta")
    want, want_meta = _meta_nodes(FOLDER / "my-model-10000.meta")
    assert got == want
    assert sorted(got_meta.collection_def) == sorted(want_meta.collection_def)
    assert got_meta.saver_def.filename_tensor_name == want_meta.saver_def.filename_tensor_name
    mine = tf.train.list_variables(str(tmp_path / "my-model-10000"))
    theirs = tf.train.list_variables(str(FOLDER / "my-model-10000"))
    assert mine == theirs


def test_mgrt_written_graph_with_tensorflow_checkpoint_trains_the_same(tmp_path):
    """mgrt's own inference graph, restored from TensorFlow's checkpoint, extends and trains
    exactly as TensorFlow's graph did."""
    g = tf.Graph()
    with g.as_default():
        seed.write_inference_graph(tf, tmp_path)
    for f in FOLDER.glob("my-model-10000.*"):
        if f.suffix != ".meta":
            shutil.copy(f, tmp_path / f.name)
    g = tf.Graph()
    with g.as_default():
        losses, added, summary = seed.import_and_extend(tf, tmp_path)
    _check_run(losses, added, summary)
