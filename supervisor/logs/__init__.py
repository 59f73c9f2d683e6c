"""One log pipeline for every line: intake from vassals, workers and the emperor, and the sinks
(journald, files, console, the in-memory tail) (`pipeline`)."""
