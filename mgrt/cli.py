"""The ``mgrt`` command:

- ``mgrt inspect FILE [--json] [--placement [--clear-devices] [--strict] [--verbose]]``
- ``mgrt run MODEL.meta [--checkpoint PREFIX|DIR] [--clear-devices] [--feed NAME=VALUE ...]
  [--fetch NAME ...] [--out DIR] [--train-op NAME --steps N [--batch-size B] [--loss NAME]]
  [--save PREFIX]`` (``mgrt.run``)
- ``mgrt demo [--out DIR] [--epochs N]`` (``mgrt.demo``): the bundled example, end to end.
"""

import argparse
import collections
import json
import sys

from mgrt.runtime import errors


def _variable_info(mgd):
    from mgrt.protos import variable_pb2

    nodes = {nd.name: nd for nd in mgd.graph_def.node}
    seen = {}
    trainable = set()
    order = ["variables", "local_variables"]
    keys = [k for k in order if k in mgd.collection_def] + sorted(
        k for k in mgd.collection_def if k not in order)
    for key in keys:
        col = mgd.collection_def[key]
        if col.WhichOneof("kind") != "bytes_list":
            continue
        if key not in ("variables", "trainable_variables", "local_variables", "model_variables",
                       "moving_average_variables", "metric_variables", "global_step"):
            continue
        for raw in col.bytes_list.value:
            vd = variable_pb2.VariableDef()
            try:
                vd.ParseFromString(raw)
            except Exception:
                continue
            name = vd.variable_name
            if key == "trainable_variables" or vd.trainable:
                trainable.add(name)
            entry = seen.setdefault(name, {"name": name, "collections": []})
            entry["collections"].append(key)
            nd = nodes.get(name.rsplit(":", 1)[0])
            if nd is not None:
                from mgrt.runtime import dtypes, tensor_shape

                entry["op"] = nd.op
                entry["resource"] = bool(vd.is_resource)
                if "dtype" in nd.attr:
                    try:
                        entry["dtype"] = dtypes.as_dtype(nd.attr["dtype"].type).name
                    except TypeError:
                        entry["dtype"] = f"DataType({nd.attr['dtype'].type})"
                if "shape" in nd.attr:
                    entry["shape"] = tensor_shape.TensorShape(nd.attr["shape"].shape).as_list() \
                        if not nd.attr["shape"].shape.unknown_rank else None
                entry["device"] = nd.device
    for name, e in seen.items():
        e["trainable"] = name in trainable
    return list(seen.values())


def _describe_collection_proto(key, raw):
    """A short name for a serialized collection proto (a variable, a saver, a context)."""
    from mgrt.runtime import meta_graph

    proto_type = meta_graph.get_collection_proto_type(key)
    if proto_type is None:
        return None
    try:
        p = proto_type.FromString(raw)
    except Exception:
        return f"<{len(raw)} bytes, not a {proto_type.DESCRIPTOR.name}>"
    for field in ("variable_name", "restore_op_name", "queue_name", "context_name"):
        if hasattr(p, field):
            return getattr(p, field)
    return f"<{proto_type.DESCRIPTOR.name}>"


def _collection_info(mgd):
    out = {}
    for key in sorted(mgd.collection_def):
        col = mgd.collection_def[key]
        kind = col.WhichOneof("kind")
        values = list(getattr(col, kind).value) if kind else []
        if kind == "bytes_list":
            shown = []
            for v in values[:5]:
                name = _describe_collection_proto(key, v)
                if name is None:
                    try:
                        text = v.decode("utf-8")
                        name = text if text.isprintable() else f"<{len(v)} bytes>"
                    except UnicodeDecodeError:
                        name = f"<{len(v)} bytes>"
                shown.append(name)
        elif kind == "any_list":
            shown = [v.type_url for v in values[:5]]
        else:
            shown = list(values[:5])
        out[key] = {"kind": kind, "count": len(values), "first": shown}
    return out


def inspect_meta_graph(path):
    """A summary of a .meta file as a JSON-able dict."""
    from google.protobuf import json_format

    from mgrt.runtime import meta_graph, op_defs

    mgd = meta_graph.read_meta_graph_file(path)
    nodes = mgd.graph_def.node
    by_op = collections.Counter(nd.op for nd in nodes)
    devices = collections.Counter(nd.device for nd in nodes)
    registry = op_defs.default_registry()
    learned = {o.name for o in mgd.meta_info_def.stripped_op_list.op}
    unknown = sorted(op for op in by_op if registry.get(op) is None)
    info = {
        "file": path,
        "tensorflow_version": mgd.meta_info_def.tensorflow_version,
        "tensorflow_git_version": mgd.meta_info_def.tensorflow_git_version,
        "graph_def_producer": mgd.graph_def.versions.producer,
        "num_nodes": len(nodes),
        "ops": dict(sorted(by_op.items(), key=lambda kv: (-kv[1], kv[0]))),
        "devices": {(d or "(none)"): n for d, n in sorted(devices.items(), key=lambda kv: (-kv[1], kv[0]))},
        "variables": _variable_info(mgd),
        "collections": _collection_info(mgd),
        "saver_def": (json_format.MessageToDict(mgd.saver_def, preserving_proto_field_name=True)
                      if mgd.HasField("saver_def") else None),
        "signature_defs": {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                           for k, v in sorted(mgd.signature_def.items())},
        "functions": [f.signature.name for f in mgd.graph_def.library.function],
        "unknown_op_types": [op for op in unknown if op not in learned],
        "op_types_known_only_from_file": [op for op in unknown if op in learned],
        "op_types_without_kernel": _without_kernel(by_op),
    }
    return info


def _without_kernel(by_op):
    """Op types of the graph that no device of this host has a kernel for (a run that needs
    one of them is refused)."""
    from mgrt import devices
    from mgrt.runtime import executor, kernel_registry

    types = {d.device_type for d in devices.list_devices()}
    return sorted(op for op in by_op if op not in executor.CONTROL_FLOW_OPS
                  and not any(kernel_registry.lookup(op, t) for t in types))


def placement_info(path, clear_devices=False, strict=False):
    """Import ``path`` and place it on this host's devices as a Session would; returns the
    Placement."""
    from mgrt import devices
    from mgrt.runtime import graph as graph_lib
    from mgrt.runtime import meta_graph, placer

    g = graph_lib.Graph()
    with g.as_default():
        meta_graph.import_meta_graph(path, clear_devices=clear_devices)
    return placer.place(g, devices.list_devices(), allow_soft_placement=not strict, warn=False)


def _gpu_status():
    from mgrt.devices import gpu_status

    return gpu_status()


def _placement_json(p):
    return {
        "devices": [d.name for d in p.devices],
        "soft_placement": p.allow_soft_placement,
        "nodes": p.as_dict(),
        "moved": [{"node": m.op.name, "requested": m.requested, "assigned": m.assigned.name,
                   "reason": m.reason} for m in p.moved],
        "colocation_groups": [[op.name for op in grp] for grp in p.colocation_groups()],
        "missing_kernels": [op.name for op in p.missing_kernels],
    }


def _print_inspect(info, out):
    w = out.write
    w(f"{info['file']}\n")
    w(f"  written by TensorFlow {info['tensorflow_version'] or '(unknown)'} "
      f"(GraphDef producer {info['graph_def_producer']}), {info['num_nodes']} nodes\n")
    w("\nOps by type:\n")
    for op, n in info["ops"].items():
        w(f"  {n:6d}  {op}\n")
    w("\nRequested devices:\n")
    for d, n in info["devices"].items():
        w(f"  {n:6d}  {d}\n")
    w(f"\nVariables ({len(info['variables'])}):\n")
    for v in info["variables"]:
        shape = v.get("shape")
        shape_s = "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
        kind = "resource" if v.get("resource") else "ref"
        flags = " trainable" if v["trainable"] else ""
        w(f"  {v['name']:40s} {v.get('dtype', '?'):10s} {shape_s:16s} {kind}{flags}\n")
    w(f"\nCollections ({len(info['collections'])}):\n")
    for key, c in info["collections"].items():
        first = ", ".join(str(x) for x in c["first"])
        more = ", ..." if c["count"] > len(c["first"]) else ""
        w(f"  {key}: {c['count']} ({c['kind']}) {first}{more}\n")
    w("\nSaver: ")
    if info["saver_def"]:
        sd = info["saver_def"]
        w(f"restore_op {sd.get('restore_op_name')!r}, save_tensor {sd.get('save_tensor_name')!r}, "
          f"filename_tensor {sd.get('filename_tensor_name')!r}, version {sd.get('version', 'V1')}\n")
    else:
        w("none\n")
    w(f"\nSignatureDefs: {', '.join(info['signature_defs']) or 'none'}\n")
    if info["functions"]:
        w(f"Functions: {', '.join(info['functions'])}\n")
    if info["op_types_known_only_from_file"]:
        w("Op types not in TensorFlow 2.21 (defined by the file's stripped_op_list): "
          + ", ".join(info["op_types_known_only_from_file"]) + "\n")
    if info["op_types_without_kernel"]:
        w("Op types with no kernel on this host (runs that need them are refused): "
          + ", ".join(info["op_types_without_kernel"]) + "\n")
    if info["unknown_op_types"]:
        w("Op types mgrt does not know at all (the graph cannot be imported): "
          + ", ".join(info["unknown_op_types"]) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="mgrt", description="Run TensorFlow 1.x MetaGraphs without TensorFlow.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_inspect = sub.add_parser("inspect", help="summarize a .meta file (binary or text)")
    p_inspect.add_argument("file", help="a MetaGraphDef file (.meta, binary or text format)")
    p_inspect.add_argument("--json", action="store_true", help="print JSON for scripts")
    p_inspect.add_argument("--placement", action="store_true",
                           help="also place the graph on this host's devices, as a Session "
                                "would, and show where each node goes and what was re-targeted")
    p_inspect.add_argument("--clear-devices", action="store_true",
                           help="with --placement: import with clear_devices=True")
    p_inspect.add_argument("--strict", action="store_true",
                           help="with --placement: strict placement "
                                "(ConfigProto(allow_soft_placement=False))")
    p_inspect.add_argument("--verbose", "-v", action="store_true",
                           help="with --placement: one line per node")
    from mgrt import demo as demo_lib
    from mgrt import run as run_lib

    p_run = sub.add_parser(
        "run", help="import a .meta, restore a checkpoint, fetch tensors or train and save",
        description="Import MODEL.meta on this host (soft placement re-targets devices it "
                    "lacks), restore a checkpoint, then print fetched tensors or run a training "
                    "op for N steps and save a checkpoint TensorFlow can read.")
    run_lib.add_arguments(p_run)
    p_demo = sub.add_parser(
        "demo", help="the bundled example: restore a GPU-pinned TensorFlow model, train on, save",
        description="Import the bundled TensorFlow model (examples/digits_mlp, every node "
                    "pinned to /job:worker/replica:0/task:0/device:GPU:0) on this host, "
                    "restore its checkpoint, train on the UCI digits, report accuracy and "
                    "throughput, and save a checkpoint.")
    demo_lib.add_arguments(p_demo)
    args = parser.parse_args(argv)

    if args.command in ("run", "demo"):
        try:
            if args.command == "run":
                return run_lib.run(args)
            if args.epochs < 0:
                raise run_lib.RunError(f"--epochs {args.epochs}: give a number >= 0")
            demo_lib.demo(example=args.example, out_dir=args.out, epochs=args.epochs,
                          seed=args.seed)
            return 0
        except (run_lib.RunError, errors.OpError) as e:
            print(f"mgrt {args.command}: {e.message}", file=sys.stderr)
            return 1
        except (ValueError, OSError) as e:
            # What the Session, the Saver or the file system says about a bad input (a feed
            # the graph refuses, an unwritable --save path): one line, no traceback.
            print(f"mgrt {args.command}: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"mgrt {args.command}: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            sys.stderr.close()
            return 0

    if args.command == "inspect":
        try:
            info = inspect_meta_graph(args.file)
            placement = None
            if args.placement:
                placement = placement_info(args.file, args.clear_devices, args.strict)
        except errors.OpError as e:
            print(f"mgrt inspect: {e.message}", file=sys.stderr)
            return 1
        try:
            if args.json:
                if placement is not None:
                    info["placement"] = _placement_json(placement)
                    info["placement"]["gpus"] = _gpu_status()
                json.dump(info, sys.stdout, indent=2, default=str)
                sys.stdout.write("\n")
            else:
                _print_inspect(info, sys.stdout)
                if placement is not None:
                    sys.stdout.write("\n" + placement.summary(verbose=args.verbose) + "\n")
                    sys.stdout.write(f"GPUs: {_gpu_status()}\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `mgrt inspect ... | head`
            sys.stderr.close()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
