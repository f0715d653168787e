"""edgepipe.pipeline: the workstation side. Imports run one way:
cli -> stages -> compress / training / models / data -> core (see README, Layout)."""
