"""Webhook endpoints: the signing secrets they get and the URLs they may point at.

The dashboard, the API and the webhooks notifier share these rules, so an endpoint refused at
registration is refused at delivery too: only public addresses (a private or loopback target
would let a merchant reach inside the network Portico runs in), unless
``WEBHOOK_ALLOW_PRIVATE_NETWORKS`` is set for development and tests.
"""

import base64
import ipaddress
import secrets
import socket

import httpx
from flask import current_app, has_app_context


def new_secret() -> str:
    """A fresh endpoint signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def check_url(url: str, allow_private: bool | None = None) -> list[str]:
    """Refuse, with a ``ValueError`` saying why, a webhook URL that is not http(s), holds
    credentials, or whose host resolves to a loopback, private, link-local (cloud metadata),
    unspecified, multicast or other non-public address; return the addresses checked.

    ``allow_private`` defaults to the app's ``WEBHOOK_ALLOW_PRIVATE_NETWORKS``."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ValueError("the webhook URL is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError("a webhook URL must start with https:// or http://")
    if parsed.userinfo:
        raise ValueError("a webhook URL must not contain a user name or password")
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise ValueError("the webhook URL has no host name")
    if allow_private is None:
        allow_private = has_app_context() and current_app.config["WEBHOOK_ALLOW_PRIVATE_NETWORKS"]
    try:
        found = socket.getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise ValueError(f"the host {host} cannot be resolved") from None
    addresses = list(dict.fromkeys(info[4][0] for info in found))
    for address in addresses:
        if not (allow_private or _public(address)):
            raise ValueError(f"the host {host} resolves to {address}, which is not a public address")
    return addresses


def _public(address: str) -> bool:
    """Whether an address is on the public Internet (IPv4 inside IPv6 judged as IPv4)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
