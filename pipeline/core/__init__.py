"""The floor every stage stands on: the params schema and its loading, the error types, atomic I/O,
checkpoints, the process runtime, the token vocabulary, losses, drawing, logging and the optimiser."""
