#!/usr/bin/env python3
"""Perplexity of a language model run by onnxruntime.

usage: ppl_ort.py MODEL INPUT.pb TARGETS.pb [--no-opt]
Runs MODEL on the token ids in INPUT.pb (TensorProto) and prints exp of the mean
negative log-likelihood of TARGETS.pb (the next token at every position) under the
log-softmax of the logits, computed in float64 (as `cc-compile eval` does). With
--no-opt, onnxruntime's graph optimizations are off (the graph as written).
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def read(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def main(argv):
    no_opt = "--no-opt" in argv
    args = [a for a in argv if a != "--no-opt"]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model, inputs, targets = args
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if no_opt:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    ids = read(inputs)
    logits = sess.run(None, {sess.get_inputs()[0].name: ids})[0].astype(np.float64)
    vocab = logits.shape[-1]
    logits = logits.reshape(-1, vocab)
    tgt = read(targets).reshape(-1)
    if tgt.shape[0] != logits.shape[0]:
        print(f"{tgt.shape[0]} targets for {logits.shape[0]} rows of logits", file=sys.stderr)
        return 1
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    nll = lse - logits[np.arange(tgt.shape[0]), tgt]
    print(f"{np.exp(nll.mean()):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
