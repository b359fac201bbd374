"""The exception types for bad input data: each message is one line naming the file or key."""


class DataError(ValueError):
    """Input data is missing or malformed; `str(err)` is a single line naming the path."""


class CacheError(DataError):
    """A token cache is missing, incomplete, of another schema or made by another tokenizer (one line)."""


def os_error_line(e: OSError) -> str:
    """`path: reason` of an error the operating system raised, with what to check."""
    reason = (e.strerror or str(e) or type(e).__name__).rstrip(".").lower()
    where = e.filename if e.filename is not None else "the operating system"
    if e.filename2 is not None:
        where = f"{where} -> {e.filename2}"
    return f"{where}: {reason} (check the path, its permissions and the free space, then re-run)"
