"""Exporting a spec's model: ``onnx`` (ONNX checked against onnxruntime);
``python -m runners.export`` is the command line."""
