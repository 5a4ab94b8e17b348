"""The one exception type that users see as a single line."""


class QexitError(Exception):
    """A problem with the user's input or environment, with the fix in the message.

    The CLI prints ``str(err)`` on one line and exits non-zero; nothing below it should
    let a library traceback escape for bad input.
    """
