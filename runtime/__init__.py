"""edgepipe.runtime: run and measure ONNX models with onnxruntime only (no paddle). Imports only devices.

Its packages follow the data flow, file -> session -> inputs -> measure -> judge -> present:

  model/    the model-file gate, onnxruntime sessions, the backends (onnxruntime, OpenVINO), what a graph costs
  inputs/   feeds of any signature, image folders by the model's input contract, .npz files read by rows
  measure/  latency, memory, energy, host load, LoadGen, roofline (and its kernels), candidates side by side
  judge/    fidelity to the float model, verdicts against a device profile's budgets

and at the top the on-device runner (`runner`, its command line `args`, the camera mode `stream` and its
webhook `notify`, how a result is shown `present`, deploy.json read by `deployment`).

This is what ships to a device: it needs onnxruntime, numpy and psutil.
"""
