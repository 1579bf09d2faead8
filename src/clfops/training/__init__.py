"""Training: `clfops train` and everything one run needs (the module, the trainer, checkpoints, callbacks,
logging, distributed launch) and what a finished run leaves behind."""
