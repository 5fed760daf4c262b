"""One kind of error for bad command-line input, shown to the user as a single line."""


class UsageError(SystemExit):
    """Bad input (flag value, checkpoint, data dir) detected before training starts.

    A ``SystemExit`` so that ``fairseq-train`` prints just this one line and exits with
    status 1, instead of a traceback, and so that fairseq's ``Trainer.load_checkpoint``
    (which rewraps every ``Exception`` as "Cannot load model parameters") cannot hide it.
    """

    def __init__(self, message: str):
        super().__init__(f"fairseq-qbert: error: {message}")
        self.message = message

    def __str__(self):
        return self.message
