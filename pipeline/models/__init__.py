"""Model sources: how the float architecture of a model is built (the built-in `convnet` and
`resnet` families, paddle.vision zoo models, a user's own factory; saved graphs and ONNX files
pass through), how a model folder or a user's weights are loaded, and helpers on any paddle Layer."""
