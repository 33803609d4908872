#!/usr/bin/env python3
"""Test oracle: run a model in onnxruntime.

usage: run_ort.py MODEL OUT_DIR INPUT.pb [INPUT.pb ...]
Feeds the TensorProto inputs to the model's inputs in order and writes each output as
OUT_DIR/output_<i>.pb (TensorProto). Prints nothing on success; exits 1 with a message
on failure. Used by the cc-tests oracle tests; nothing here compares: the Rust test does.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load_feed(sess, inputs):
    """Reads the TensorProto files `inputs` into a feed for `sess`'s inputs, in order."""
    feed = {}
    for meta, path in zip(sess.get_inputs(), inputs):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        feed[meta.name] = numpy_helper.to_array(t)
    return feed


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, out_dir, inputs = argv[0], argv[1], argv[2:]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if os.environ.get("CC_ORT_DISABLE_OPT"):
        # The graph as written, without onnxruntime's rewrites (some are lossy, e.g.
        # DequantizeLinear -> MatMul becomes an integer MatMul on quantized activations).
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    feed = load_feed(sess, inputs)
    outs = sess.run(None, feed)
    for i, (meta, value) in enumerate(zip(sess.get_outputs(), outs)):
        t = numpy_helper.from_array(np.asarray(value), meta.name)
        with open(f"{out_dir}/output_{i}.pb", "wb") as f:
            f.write(t.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
