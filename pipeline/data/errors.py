"""The one exception type for bad input data: its message is one line naming the file or key."""


class DataError(ValueError):
    """Input data is missing or malformed; `str(err)` is a single line naming the path."""
