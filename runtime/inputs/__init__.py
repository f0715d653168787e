"""edgepipe.runtime.inputs: what a model is fed. Inputs of any signature as feeds (`feeds`), a folder
of images decoded by the model's input contract (`images`), and an .npz read by rows without holding
the file (`npzfile`)."""
