"""One control plane process: the controller that drives the pipeline, and the wiring of state,
snapshot cache, ADS server and HTTP endpoints around it."""
