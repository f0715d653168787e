"""edgepipe.runtime: run and measure ONNX models with onnxruntime only (no paddle): sessions, the
benchmark harness, what a graph costs (params, MACs; needs `onnx`), energy, roofline, verdicts and
the on-device runner. Imports only devices.

This is what ships to a device: it needs onnxruntime, numpy and psutil.
"""
