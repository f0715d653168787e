"""Compression techniques, one module or sub-package each: distillation (distill), parameter
pruning (sparsity), channel pruning (channels/), block removal (blocks), low-rank factorisation
(lowrank) and quantization-aware training (qat). Each holds its algorithm and nothing about the
run directory; the stages bind them to a run."""
