"""Errors that come from what the user asked for, told as one `error:` line.

`explain` tells them from bugs: it has a message for a refused option or value, a damaged
artifact, a failed download and an S3 store that cannot be reached or refuses, and None for
anything else, which keeps its traceback. The CLI and the studio print its message; under
`luigi --module pipeline ...`, where luigi logs every failure with its traceback, the filter
`OneLineErrors` turns the records of explained errors into one line.
"""
import logging
import sys
import urllib.parse
from contextlib import contextmanager
from typing import Callable

import botocore.exceptions

from ganmodels.options import OptionError

from .artifacts import storage


class UserError(Exception):
    """A problem with what the user asked for or with their data (a failed download, an archive
    that cannot be read): one line for the CLI and luigi, one message for the studio."""


_EXPLAINED_AS_THEY_ARE = (UserError, OptionError, storage.ArtifactError)


def _endpoint(error: botocore.exceptions.BotoCoreError) -> str:
    """The scheme, host and port of the endpoint an error names: never a path, query or user info."""
    url = urllib.parse.urlsplit(error.kwargs.get("endpoint_url", ""))
    return f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "") if url.hostname else "the endpoint"


def explain(error: BaseException) -> str | None:
    """The message for an error that comes from what the user asked for or from their
    environment (a refused value, a damaged artifact, a failed download, an unreachable or
    refusing S3 store), or None for any other, which is a bug and keeps its traceback."""
    if isinstance(error, _EXPLAINED_AS_THEY_ARE):
        return str(error)
    if isinstance(error, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return (f"cannot reach the S3 endpoint {_endpoint(error)} ({type(error).__name__}); check [s3] endpoint_url "
                "and that the store is up")
    if isinstance(error, botocore.exceptions.NoCredentialsError):
        return "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or use ~/.aws/credentials"
    if isinstance(error, botocore.exceptions.ClientError):
        details = error.response.get("Error", {})
        return f"S3 refused the request: {details.get('Code', 'unknown error')} ({details.get('Message', '')})"
    return None


def exit_code(command: Callable[[], object]) -> int:
    """Run a command-line program's work: 0 when it succeeds, 2 with one `error:` line for a user's mistake
    (explain), and any other failure raised with its traceback."""
    try:
        command()
    except Exception as error:
        if (message := explain(error)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


@contextmanager
def explained_as_user_errors():
    """Re-raise an explained error as a UserError with its message and no chained traceback.

    luigi hands on a failure of a task's complete() or deps() only as traceback text; after
    this, its last line is the UserError's, which OneLineErrors finds.
    """
    try:
        yield
    except Exception as error:
        if (message := explain(error)) is None:
            raise
        raise UserError(message) from None


# How Python's traceback module starts the last lines of a UserError's traceback, before the message.
_USER_ERROR_PREFIX = f"\n{UserError.__module__}.{UserError.__qualname__}: "
_TRACEBACK = "Traceback (most recent call last)"


def _final_user_error(text: str) -> str | None:
    """The message of the UserError that a traceback's text ends with, if it ends with one."""
    start = text.rfind(_USER_ERROR_PREFIX)
    if start < 0 or _TRACEBACK in text[start:]:  # another error followed it: that one is the failure
        return None
    return text[start + len(_USER_ERROR_PREFIX):].rstrip("\n")


class OneLineErrors(logging.Filter):
    """Turns a log record about an explained error into the one line `error: <message>`.

    luigi logs a failed run() and an error while building the command line's task with the
    exception, and a failed complete() or deps() with its traceback as text; any other
    record, and the record of any other error, passes unchanged, traceback and all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            message = explain(record.exc_info[1])
        elif _TRACEBACK in str(record.msg):
            message = _final_user_error(record.getMessage())
        else:
            message = None
        if message is not None:
            record.msg, record.args, record.exc_info, record.exc_text = message, (), None, None
            record.levelname = "error"  # luigi's format is "%(levelname)s: %(message)s"
        return True
