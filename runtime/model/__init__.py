"""edgepipe.runtime.model: from a file to a running session. The one gate every ONNX file passes
before anything reads it (`modelfile`), onnxruntime sessions (`session`), the runtime backends behind
one session interface (`backends/`: onnxruntime, OpenVINO), and what a graph costs (`cost`: params,
MACs; needs `onnx`)."""
