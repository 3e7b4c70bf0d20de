"""What text from outside may be, in one place: single-line text, local redirect targets and
the absolute web addresses a merchant gives for customers to be sent to.

Names, descriptions and the like typed in the portal, the dashboard or sent to the API are
single-line text (``SINGLE_LINE``): no control characters, so that an e-mail header built from
them can always be written. Every ``next``/return parameter goes through ``local_path`` before
it becomes a ``Location``. (Escaping is Jinja's autoescape: every value shown in a page or an
HTML e-mail is rendered by an ``.html`` template, and nothing is marked safe.)
"""

import re
from urllib.parse import urlsplit

SINGLE_LINE = r"^[^\x00-\x1f\x7f-\x9f]*$"  # C0 and C1 control characters, CR and LF among them
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# An absolute http(s) URL whose host is plain letters, digits, dots and hyphens (no user info,
# spaces or backslashes) and whose path is visible ASCII: what a redirect may be sent to.
WEB_URL = r"^https?://[A-Za-z0-9.-]*[A-Za-z0-9](:[0-9]{1,5})?(/[!-~]*)?$"


def single_line(value) -> bool:
    """Whether ``value`` is one line of text: no control character (CR, LF, tab, NUL…)."""
    return isinstance(value, str) and CONTROL.search(value) is None


def web_url(value, https_only: bool = False, max_length: int = 2000) -> bool:
    """Whether ``value`` is an absolute web address (``WEB_URL``) customers may be sent to,
    of https only when ``https_only`` (live mode)."""
    return (isinstance(value, str) and len(value) <= max_length
            and re.fullmatch(WEB_URL, value) is not None
            and (not https_only or value.startswith("https://")))


def local_path(target, within: str = "/") -> str | None:
    """``target`` if it is a path on this site under ``within`` (``/portal/``, ``/dashboard``),
    else ``None``: never another site, whatever a browser would make of it.

    Refused: control characters (browsers drop tabs and newlines, so ``/\\t/evil.example``
    would become ``//evil.example``) and backslashes (read as ``/``); anything whose scheme or
    host is not empty once parsed; a path that does not start with a single ``/``; ``..``
    segments, which could climb out of ``within``.
    """
    if not isinstance(target, str) or not single_line(target) or "\\" in target:
        return None
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or ".." in parts.path.split("/") or not target.startswith(within)):
        return None
    return target


class SingleLine:
    """A WTForms validator: the field, when filled, is single-line text (``single_line``)."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if field.data and not single_line(field.data):
            from wtforms.validators import ValidationError

            raise ValidationError(self.message)
