#!/usr/bin/env python3
"""Write the ResNet-50-sized benchmark model: ``python scripts/build_resnet50.py OUT.onnx``.

The model (``sparsify_tui.analysis.demo.build_resnet50_proto``) has ResNet-50's
shape and cost with seeded random weights; the benchmarks and several tests use it.
"""

import sys

from sparsify_tui.analysis.demo import build_resnet50_model

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/build_resnet50.py OUT.onnx")
    print(build_resnet50_model(sys.argv[1]))
