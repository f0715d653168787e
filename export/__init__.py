"""edgepipe.export: Paddle -> ONNX (checked against Paddle), graph analysis, int8 quantization."""
