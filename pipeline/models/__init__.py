"""Model sources: how the float architecture of a model is built (today the built-in `convnet`
and `resnet` families), how a model folder is loaded back (source + transforms + weights), and
helpers that work on any paddle Layer."""
