"""edgepipe.runtime.measure: what a model costs on the machine it runs on. Latency (`bench`), memory,
energy, how busy the host was (`hostload`), MLPerf LoadGen's SingleStream (`loadgen`), MAC/s against
the host's measured peak (`roofline`, with its `kernels/`), and candidates timed side by side for the
deploy stage (`compare`)."""
