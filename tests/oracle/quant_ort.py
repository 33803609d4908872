#!/usr/bin/env python3
"""onnxruntime's 4-bit weight-only quantizer, for comparisons with cc-compile.

usage: quant_ort.py MODEL OUT [BLOCK_SIZE]
Quantizes every MatMul with a constant weight to com.microsoft.MatMulNBits with
onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer (bits 4, block
BLOCK_SIZE (default 32), is_symmetric=True, its default algorithm: round to nearest)
and writes OUT. Prints the seconds from loading MODEL to OUT written (imports
excluded); exits 1 with a message on failure.
"""
import logging
import sys
import time


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    model, out = argv[0], argv[1]
    block = int(argv[2]) if len(argv) == 3 else 32
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.disable(logging.WARNING)
    start = time.perf_counter()
    q = MatMulNBitsQuantizer(onnx.load(model), bits=4, block_size=block, is_symmetric=True)
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
