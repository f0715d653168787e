"""edgepipe.runtime: run and measure ONNX models with onnxruntime only (no paddle).

This is what ships to a device: it needs onnxruntime, numpy and psutil.
"""
