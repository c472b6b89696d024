"""The base of the errors that mean bad input rather than a bug: the CLI prints them as one `error:` line.

Its own module, free of torch, so that the CLI can catch them without importing the modules that raise them."""


class UserError(ValueError):
    """An input the toolkit cannot use; the message names the file and what is wrong with it."""
