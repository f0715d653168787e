"""edgepipe.runtime.judge: what the measurements mean. How closely a model's outputs follow its float
model's (`fidelity`), and a result against a device profile's budgets (`verdict`)."""
