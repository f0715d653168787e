"""edgepipe.export: Paddle -> ONNX (checked against Paddle), int8 / fp16 / 4-bit quantization with the
accuracy guard, and `explain` (where an int8 model spends its time). Imports only runtime and devices."""
