"""The one exception type for bad input a user can fix.

Raised at the boundaries (config load, data load, CLI arguments, model output checks) with a
one-line message that names what is wrong and how to fix it. The CLI prints it without a traceback.
"""


class BGPOError(ValueError):
    """Bad input (config, data, parameters, model output): the message says what to change."""
