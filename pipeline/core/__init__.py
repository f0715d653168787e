"""The run core: recipe parsing and typed config, the stage and transform registry, the run
directory with its manifest, and the model folder format. It imports no technique and no stage."""
