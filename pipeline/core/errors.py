"""The exception types for bad input data: each message is one line naming the file or key."""


class DataError(ValueError):
    """Input data is missing or malformed; `str(err)` is a single line naming the path."""


class CacheError(DataError):
    """A token cache is missing, incomplete, of another schema or made by another tokenizer (one line)."""
