"""The built-in invoice renderer: WeasyPrint turns the invoice HTML the core rendered into a PDF.

Invoice HTML carries customer-typed text, so rendering is sealed off: the URL fetcher serves
only the bundled assets in ``templates/invoice/`` and ``data:`` URIs (the business logo), and
refuses everything else, so no markup can reach the network, read a local file or attach one
to the PDF. WeasyPrint is imported on first use: it is slow to import and web processes never
render (the worker warms it up once before forking).
"""

import mimetypes
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from core.config import shipped
from core.hookspecs import hookimpl

ASSETS = shipped("templates") / "invoice"
ASSETS_URL = ASSETS.as_uri() + "/"  # the base URL: href="invoice.css" resolves in ASSETS


def bundled_asset(url: str) -> Path | None:
    """The file under ``ASSETS`` that ``url`` names, or ``None`` if it names anything else."""
    parts = urlsplit(url)
    if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
        return None
    path = Path(url2pathname(parts.path)).resolve()
    return path if path.is_relative_to(ASSETS) and path.is_file() else None


@cache
def _fetcher_class():
    """WeasyPrint's ``URLFetcher`` narrowed to bundled assets and ``data:`` URIs."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class BundledAssetsFetcher(URLFetcher):
        def __init__(self):
            super().__init__(allowed_protocols=("data",), allow_redirects=False)

        def fetch(self, url, headers=None):
            if url.startswith("data:"):
                return super().fetch(url, headers)
            path = bundled_asset(url)
            if path is None:
                raise ValueError(f"invoices may only use bundled assets, not {url[:200]}")
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return URLFetcherResponse(url, path.read_bytes(), {"Content-Type": content_type})

    return BundledAssetsFetcher


def url_fetcher():
    """A fresh fetcher that serves bundled assets and ``data:`` URIs and refuses the rest."""
    return _fetcher_class()()


def html_to_pdf(html: str) -> bytes:
    """Convert invoice ``html`` to PDF bytes, relative URLs resolving in ``templates/invoice/``."""
    from weasyprint import HTML

    return HTML(string=html, base_url=ASSETS_URL, url_fetcher=url_fetcher()).write_pdf()


def _check_fonts(app):
    """Fontconfig, which WeasyPrint draws text with, knows a font for Latin text."""
    try:
        found = subprocess.run(["fc-list", ":lang=en", "family"], capture_output=True, text=True,
                               timeout=10).stdout.split("\n")
    except FileNotFoundError:
        raise RuntimeError("fontconfig (fc-list) is not installed: invoices cannot be drawn") from None
    families = sorted({line.split(",")[0] for line in found if line.strip()})
    if not families:
        raise RuntimeError("no font is installed for invoices (Debian: apt-get install fonts-dejavu-core)")
    return f"{len(families)} font families, e.g. {families[0]}"


@hookimpl
def production_checks(app):
    return {"fonts": _check_fonts}


@hookimpl(trylast=True)
def render_invoice(invoice, html, app):
    """Render the invoice's HTML with WeasyPrint; runs last, so any other renderer wins."""
    return html_to_pdf(html)


def warm_up():
    """Import WeasyPrint and render a tiny document, so forked job processes start warm."""
    html_to_pdf('<link rel="stylesheet" href="invoice.css"><p>Portico</p>')


@hookimpl
def prepare_worker(app):
    """Warm WeasyPrint up in the worker before it forks: each job then renders in ~0.1 s."""
    warm_up()
