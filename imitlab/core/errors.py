"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class ImitlabError(Exception):
    """A user-facing failure (bad path, unknown env id, corrupt file): the message says what and where."""
