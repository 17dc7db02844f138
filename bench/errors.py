"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero."""


class BenchError(Exception):
    """A problem the user can fix; the message says what to do."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean X?)' for the closest known name, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""
