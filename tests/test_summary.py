"""TF1 summaries built with mgrt: TensorFlow's graph and serialized Summary protos, and event
files that TensorBoard's own reader reads back.

tests/fixtures/make_summary.py ran the same ``build`` code in TensorFlow (scalars of several
dtypes, a family, a name scope; histograms of normal, tiny, integer, zero, huge, scalar and
empty values; text; merge and merge_all) and recorded the graph, the bytes each op produced
and TensorFlow's errors for bad input.
"""

import base64
import glob
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import mgrt.compat.v1 as tf
from mgrt import errors

FIXTURES = Path(__file__).parent / "fixtures"
DOC = json.loads((FIXTURES / "summary" / "summary.json").read_text())
sys.path.insert(0, str(FIXTURES))
import make_summary as mk  # noqa: E402


def _build():
    g = tf.Graph()
    with g.as_default():
        ops = mk.build(tf)
    return g, ops


def test_graph_as_tensorflow():
    g, ops = _build()
    assert mk.describe_graph(g.as_graph_def()) == DOC["nodes"]
    assert {k: v.name for k, v in ops.items()} == DOC["ops"]
    assert [t.name for t in g.get_collection("summaries")] == DOC["summaries_collection"]
    for t in ops.values():
        assert t.dtype == tf.string and t.shape.as_list() == []


@pytest.mark.parametrize("key", sorted(DOC["serialized"]))
def test_serialized_summary_as_tensorflow(key):
    """Byte for byte what TensorFlow's kernel produced (the histogram's fixed exponential
    buckets, min/max/num/sum/sum_squares, the collapsed empty runs)."""
    g, ops = _build()
    with tf.Session(graph=g) as sess:
        got = sess.run(ops[key])
    assert isinstance(got, bytes)
    want = base64.b64decode(DOC["serialized"][key])
    if got != want:  # a readable diff first
        assert str(tf.summary.Summary.FromString(got)) == DOC["text_format"][key]
    assert got == want


def test_histogram_against_numpy():
    """The histogram's counts and statistics from numpy: every value lands in the bucket whose
    limit is the first above it; the counts add up to the number of values."""
    values = np.random.RandomState(0).standard_normal(500).astype(np.float64) * 100
    g = tf.Graph()
    with g.as_default():
        op = tf.summary.histogram("h", tf.constant(values))
        with tf.Session() as sess:
            h = tf.summary.Summary.FromString(sess.run(op)).value[0].histo
    assert h.num == 500 and h.min == values.min() and h.max == values.max()
    np.testing.assert_allclose(h.sum, values.sum(), rtol=1e-12)
    np.testing.assert_allclose(h.sum_squares, (values ** 2).sum(), rtol=1e-12)
    assert sum(h.bucket) == 500
    limits = np.array(h.bucket_limit)
    for v in values:
        i = int(np.searchsorted(limits, v, side="right"))
        assert h.bucket[i] >= 1
        assert limits[i] > v and (i == 0 or limits[i - 1] <= v)
    # the limits are TensorFlow's: +-1e-12 * 1.1**k, or 0
    nz = np.abs(limits[(limits != 0) & (np.abs(limits) < 1e300)])
    k = np.log(nz / 1e-12) / np.log(1.1)
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)


@pytest.mark.parametrize("case", mk.ERROR_CASES)
def test_errors_as_tensorflow(case):
    rec = DOC["errors"][case]
    g = tf.Graph()
    with g.as_default():
        op = mk.build_error(tf, case)
        feed = {g.get_tensor_by_name(k): v for k, v in mk.ERROR_FEEDS.get(case, {}).items()}
        with tf.Session() as sess:
            if rec["type"] is None:
                assert sess.run(op, feed) == base64.b64decode(rec["serialized"])
                return
            with pytest.raises(errors.OpError) as ei:
                sess.run(op, feed)
    assert type(ei.value).__name__ == rec["type"]
    assert rec["message"] in str(ei.value)


def test_bad_input_at_build_time():
    g = tf.Graph()
    with g.as_default():
        with pytest.raises(TypeError, match="ScalarSummary"):
            tf.summary.scalar("s", tf.constant("text"))
        with pytest.raises(ValueError, match="scalar"):
            tf.summary.scalar("s", tf.constant([1.0, 2.0]))
        with pytest.raises(TypeError, match="HistogramSummary"):
            tf.summary.histogram("h", tf.constant([True]))
        with pytest.raises(ValueError, match="dtype string"):
            tf.summary.text("t", tf.constant(1.0))
        with pytest.raises(TypeError, match="list"):
            tf.summary.merge(tf.summary.scalar("a", 1.0))
        with pytest.raises(TypeError, match="string"):
            tf.summary.merge([tf.constant(1.0)])
        assert tf.summary.merge_all(key="nothing_here") is None
        s = tf.summary.scalar("a b/c:d", 1.0)  # an illegal tag is cleaned, as TensorFlow does
        assert s.op.name == "a_b/c_d"


# --- event files, read back by TensorBoard ----------------------------------------------------
def _train_with_summaries(logdir, steps=5):
    g = tf.Graph()
    with g.as_default():
        w = tf.Variable(np.array([3.0, -2.0], np.float32), name="w")
        loss = tf.reduce_sum(tf.square(w), name="loss_value")
        tf.summary.scalar("loss", loss)
        tf.summary.histogram("weights", w)
        merged = tf.summary.merge_all()
        step = tf.train.get_or_create_global_step()
        train_op = tf.train.GradientDescentOptimizer(0.1).minimize(loss, global_step=step)
        losses, weights = [], []
        init = tf.global_variables_initializer()
        with tf.Session() as sess, tf.summary.FileWriter(logdir, sess.graph) as writer:
            sess.run(init)
            for _ in range(steps):
                s, lv, wv, gs = sess.run([merged, loss, w, step])
                writer.add_summary(s, gs)
                losses.append(float(lv))
                weights.append(wv)
                sess.run(train_op)
            writer.flush()
    return g, losses, weights


def test_event_file_read_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator

    g, losses, weights = _train_with_summaries(str(tmp_path))
    files = glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))
    assert len(files) == 1
    acc = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.HISTOGRAMS: 0})
    acc.Reload()
    tags = acc.Tags()
    assert "loss" in tags["scalars"] and "weights" in tags["histograms"]
    assert tags["graph"] is True
    scalars = acc.Scalars("loss")
    assert [e.step for e in scalars] == list(range(5))
    # numpy reference: gradient descent on sum(w**2) with lr 0.1 scales w by 0.8 per step
    w0 = np.array([3.0, -2.0])
    want = [float(np.sum((w0 * 0.8 ** k) ** 2)) for k in range(5)]
    np.testing.assert_allclose([e.value for e in scalars], want, rtol=1e-5)
    np.testing.assert_allclose([e.value for e in scalars], losses, rtol=1e-6)
    hists = acc.Histograms("weights")
    assert [e.step for e in hists] == list(range(5))
    for e, wv in zip(hists, weights):
        h = e.histogram_value
        assert h.num == 2 and h.min == pytest.approx(wv.min()) and h.max == pytest.approx(wv.max())
        assert h.sum == pytest.approx(float(wv.astype(np.float64).sum()))
    graph_def = acc.Graph()
    names = {n.name for n in graph_def.node}
    assert {"w", "loss_value", "GradientDescent", "loss", "weights"} <= names
    assert len(graph_def.node) == len(g.as_graph_def().node)


def test_event_file_first_record_and_writer_api(tmp_path):
    """The file starts with TensorBoard's version event; events carry wall time and step;
    add_event / add_graph(GraphDef) / reopen / FileWriterCache work; a closed writer refuses."""
    from tensorboard.backend.event_processing import event_file_loader

    g = tf.Graph()
    with g.as_default():
        tf.constant(1.0, name="c")
    writer = tf.summary.FileWriter(str(tmp_path / "a"), filename_suffix=".x")
    assert writer.get_logdir() == str(tmp_path / "a")
    summ = tf.summary.Summary(value=[tf.summary.Summary.Value(tag="manual", simple_value=2.5)])
    writer.add_summary(summ, global_step=7)
    writer.add_graph(g.as_graph_def())
    writer.close()
    with pytest.raises(RuntimeError):
        writer.flush()
    writer.reopen()
    writer.add_summary(summ.SerializeToString(), 8)
    writer.close()
    with pytest.raises(TypeError):
        tf.summary.FileWriter(str(tmp_path / "b")).add_summary(12)
    files = sorted(glob.glob(str(tmp_path / "a" / "events.out.tfevents.*.x")))
    assert files
    events = [e for f in files for e in event_file_loader.LegacyEventFileLoader(f).Load()]
    assert events[0].file_version == "brain.Event:2"
    values = [(e.step, v.tag, v.simple_value) for e in events if e.HasField("summary")
              for v in e.summary.value]
    assert values == [(7, "manual", 2.5), (8, "manual", 2.5)]
    assert any(e.HasField("graph_def") for e in events)
    assert all(e.wall_time > 0 for e in events)
    tf.summary.FileWriterCache.clear()
    with g.as_default():
        w1 = tf.summary.FileWriterCache.get(str(tmp_path / "c"))
        assert tf.summary.FileWriterCache.get(str(tmp_path / "c")) is w1
    tf.summary.FileWriterCache.clear()
