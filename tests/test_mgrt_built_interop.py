"""Issue 6's interop check: graphs built and initialized by mgrt (fixtures/mgrt_built_model.py)
were imported and trained by TensorFlow (fixtures/make_mgrt_built.py recorded the losses and
final variables). Here mgrt builds the same graph again, checks it is the graph TensorFlow ran
and the one TensorFlow builds from the same code, restores the same checkpoint and must train
to TensorFlow's losses and values."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt.protos import meta_graph_pb2

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import mgrt_built_model as model  # noqa: E402

DIR = FIXTURES / "mgrt_built"
CONFIGS = [(opt, res, f"{opt}_{'resource' if res else 'ref'}") for opt, res in model.CONFIGS]


def _nodes(graph_def):
    return [(n.name, n.op, list(n.input)) for n in graph_def.node]


@pytest.mark.parametrize("opt, res, base", CONFIGS, ids=[c[2] for c in CONFIGS])
def test_tensorflow_trains_mgrt_built_graph_as_mgrt_does(opt, res, base):
    g = tf.Graph()
    with g.as_default():
        x, y, loss, train_op = model.build(tf, opt, res)
        # the graph is the one TensorFlow builds from the same Python code ...
        # (less TensorFlow's stray Consts: its op wrappers leave a first conversion of an
        # empty shape list, ``Sum_1_grad/Reshape/shape``, dangling when they retry as int32)
        tf_nodes = json.loads((DIR / f"{base}.tf_nodes.json").read_text())
        assert [[o.name, o.type] for o in g.get_operations() if o.type != "Const"] == \
            [n for n in tf_nodes if n[1] != "Const"]
        saver = tf.train.Saver()
        tf.global_variables_initializer()  # as the fixture script, before it exported
        # ... and the one TensorFlow imported and trained
        committed = meta_graph_pb2.MetaGraphDef()
        committed.ParseFromString((DIR / f"{base}.meta").read_bytes())
        assert _nodes(g.as_graph_def()) == _nodes(committed.graph_def)
        rec = np.load(DIR / f"{base}.tf.npz")
        with tf.Session() as s:
            saver.restore(s, str(DIR / f"{base}-0"))
            losses = []
            for step in range(model.STEPS):
                xs, ys = model.data(step)
                _, lv = s.run([train_op, loss], {x: xs, y: ys})
                losses.append(lv)
            np.testing.assert_allclose(losses, rec["losses"], rtol=2e-5)
            names = sorted(k[4:] for k in rec.files if k.startswith("var:"))
            assert sorted(v.op.name for v in tf.global_variables()) == names
            for v in tf.global_variables():
                np.testing.assert_allclose(s.run(v), rec["var:" + v.op.name], rtol=1e-4,
                                           atol=1e-6, err_msg=v.op.name)
