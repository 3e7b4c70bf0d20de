"""The customer portal: pages for a signed-in customer, branded for their business.

For now its home page: who is signed in, the way back to the merchant's site, and signing
out. Every view is ``customer_required``: the session is checked on the server each time.
"""

from flask import Blueprint, render_template
from flask_login import current_user

from core.auth import customer_required

bp = Blueprint("portal", __name__, url_prefix="/portal")


@bp.get("/")
@customer_required
def home():
    """The customer's home in the portal."""
    user = current_user
    return render_template("portal/home.html", business=user.business, mode=user.session.mode,
                           customer=user.customer, return_url=return_url(user))


def return_url(user) -> str | None:
    """The "Return to {business}" address: the session's own (from the API), else the
    business's default; only ever an http(s) URL."""
    url = user.session.return_url or user.business.default_return_url
    return url if url and url.startswith(("https://", "http://")) else None
