"""The error a recipe raises for bad input: the CLI prints its message as one line, exit 2."""


class UsageError(ValueError):
    """An option or input is wrong; the message says what and how to fix it."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the CLI prints the message as one line, exit 1.

    Raised by the engine (`headstart.recipes.engine.diverged`) with `result` (the training so far,
    its model back at the best weights seen) for the recipe to save before it exits.
    """

    def __init__(self, message, *, epoch, step, phase, result):
        super().__init__(message)
        self.epoch, self.step, self.phase, self.result = epoch, step, phase, result
