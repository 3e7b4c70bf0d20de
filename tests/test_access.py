"""Customer access: the static link, magic links and portal sessions, with the security targets
A.1–A.14 (sign-in links, sessions, identity), CSRF on every form and the security headers."""

import base64
import hashlib
import logging
import re
import statistics
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import time_machine
from conftest import csrf_token

from core import auth
from core.auth import limiter
from core.jobs import queue
from core.models import MODELS, AuditLog, Business, Customer, PortalSession, PortalToken, db, utcnow

ROOT = Path(__file__).resolve().parent.parent
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nlogo").decode()
SCANNER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0 Safari/537.36"}
EXPIRED = "This link has expired or was already used"


@pytest.fixture
def app(make_app, heard):
    app = make_app(plugins=[heard])
    with app.app_context():
        yield app




def csrf_for(client) -> str:
    """A CSRF token of the client's session (from any page with a form)."""
    return csrf_token(client.get("/dashboard/login").text)


def static_path(business, mode="test") -> str:
    return f"{'/test' if mode == 'test' else ''}/login/{business.id}"


def request_link(client, business, email, mode="test", **kwargs):
    """Ask for a link on the static link page, and follow to the page the browser shows."""
    kwargs.setdefault("follow_redirects", True)
    page = client.get(static_path(business, mode), base_url=kwargs.get("base_url"))
    return client.post(static_path(business, mode), data={"csrf_token": csrf_token(page.text),
                                                          "email": email}, **kwargs)


def use_link(client, link):
    """Open a sign-in link as a browser does: its page, then the POST it continues with."""
    return client.post(urlsplit(link).path, data={"csrf_token": csrf_for(client)})


def signed_in_session(client):
    with client.session_transaction() as session:
        return session.get("_user_id")


def sign_in(client, customer):
    response = use_link(client, auth.sign_in_link(customer))
    assert response.status_code == 303
    return PortalSession.get_by_id(signed_in_session(client))


@pytest.fixture
def other_business(app):
    return Business.create(name="Other Shop")


# --- The static link ------------------------------------------------------------------------


def test_static_link_page_is_branded_with_the_business_name_logo_and_colour(client, business):
    Business.update(logo=PNG, brand_color="#0f766e").where(Business.id == business.id).execute()
    page = client.get(static_path(business, "live"))
    assert page.status_code == 200
    assert "Sign in to Acme Software" in page.text
    assert f'<img class="logo" src="{PNG}" alt="Acme Software">' in page.text
    stylesheet = re.search(r'href="(/brand/[^"]+)"', page.text)[1]
    css = client.get(stylesheet)
    assert css.mimetype == "text/css" and "--brand: #0f766e" in css.text


def test_test_mode_static_link_says_it_is_test_mode(client, business):
    assert "Test mode" in client.get(static_path(business, "test")).text
    assert "Test mode" not in client.get(static_path(business, "live")).text


def test_static_link_of_an_unknown_business_is_not_found(client):
    assert client.get("/login/bus_doesnotexist").status_code == 404


def test_known_customer_receives_a_sign_in_link_by_email(client, business, customer, heard):
    answer = request_link(client, business, "ann@example.com")
    assert answer.status_code == 200
    assert "Check your inbox" in answer.text
    assert "If <strong>ann@example.com</strong> has purchases at Acme Software" in answer.text
    [note] = heard.of_type("customer.sign_in_link")
    assert note.customer_id == customer.id and note.mode == "test"
    assert note.secrets["link"].startswith("http://portal.test/session/")


def test_email_address_is_recognised_whatever_its_case_and_spaces(client, business, customer, heard):
    request_link(client, business, "  Ann@Example.COM ")
    assert len(heard.links()) == 1


def test_live_static_link_ignores_test_mode_customers(client, business, customer, heard):
    answer = request_link(client, business, "ann@example.com", mode="live")
    assert "Check your inbox" in answer.text
    assert heard.links() == []


def test_malformed_email_is_refused_with_a_field_message(client, business, heard):
    answer = request_link(client, business, "not-an-address")
    assert answer.status_code == 400
    assert "Enter a valid e-mail address" in answer.text
    assert heard.notifications == [] and AuditLog.select().count() == 0


def test_answer_and_timing_are_the_same_for_known_unknown_foreign_and_limited_emails(
        make_app, heard, redis_url, business, other_business):
    """Target 7: every class gets the same status, headers and page (the address aside), and a
    job is queued for every address not over its limit, so timing tells nothing either."""
    app = make_app({"REDIS_URL": redis_url, "QUEUE_NAME": f"access-{time.time_ns()}",
                    "SIGN_IN_LIMIT_PER_IP": "1000 per hour"}, plugins=[heard])
    client = app.test_client()
    with app.app_context():
        limiter.reset()
        rounds = 12
        for n in range(rounds):
            Customer.create(business=business, mode="test", email=f"known{n}@example.com")
            Customer.create(business=other_business, mode="test", email=f"foreign{n}@example.com")
        request_link(client, business, "limited@example.com")  # the address's one e-mail a minute
        classes = {"known": "known{}@example.com", "unknown": "nobody{}@example.com",
                   "foreign": "foreign{}@example.com", "limited": "limited@example.com"}
        timings = {name: [] for name in classes}
        answers = {}
        token = csrf_token(client.get(static_path(business)).text)
        for n in range(rounds):
            for name, pattern in classes.items():
                email = pattern.format(n)
                started = time.perf_counter()
                answer = client.post(static_path(business), data={"csrf_token": token, "email": email})
                timings[name].append(time.perf_counter() - started)
                headers = sorted((k, v) for k, v in answer.headers.items()
                                 if k not in ("Content-Length", "Set-Cookie", "X-Request-ID"))
                answers.setdefault(name, set()).add(
                    (answer.status_code, tuple(headers), answer.text.replace(email, "ADDRESS")))
        assert all(len(seen) == 1 for seen in answers.values())
        assert len(set().union(*answers.values())) == 1
        medians = [statistics.median(times) for times in timings.values()]
        assert max(medians) - min(medians) < 0.020
        assert len(queue().jobs) == 1 + 3 * rounds  # a job per request but the limited ones
        assert heard.notifications == []  # the jobs, not the request, look customers up


def test_an_address_gets_at_most_one_email_a_minute_and_five_an_hour(client, business, customer, heard):
    start = utcnow()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(7):
            for _again in range(2):
                answer = request_link(client, business, "ann@example.com")
                assert answer.status_code == 200 and "Check your inbox" in answer.text
            clock.shift(timedelta(minutes=1, seconds=1))
    assert len(heard.links()) == 5
    limited = AuditLog.select().where(AuditLog.outcome == "rate_limited").count()
    assert limited == 14 - 5


def test_one_network_may_ask_for_twenty_links_an_hour_then_is_told_to_wait(client, business):
    for n in range(20):
        assert request_link(client, business, f"someone{n}@example.com").status_code == 200
    answer = request_link(client, business, "one-more@example.com")
    assert answer.status_code == 429
    assert "Too many sign-in links were requested from your network" in answer.text
    assert int(answer.headers["Retry-After"]) > 0
    assert AuditLog.select().where(AuditLog.event == "sign_in_link.requested").count() == 20


def test_sign_in_limits_hold_across_web_processes(make_app, heard, redis_url, business, customer):
    """Target 8: with Redis, a second process (another gunicorn worker) sees the same counts."""
    secret = "s" * 40
    app = make_app({"REDIS_URL": redis_url, "SECRET_KEY": secret}, plugins=[heard])
    with app.test_request_context():
        limiter.reset()
        assert auth.allow_sign_in_email("ann@example.com")
    other_worker = subprocess.run(
        [sys.executable, "-c", "from core import create_app; from core import auth; "
         "app = create_app(); ctx = app.test_request_context(); ctx.push(); "
         "print(auth.allow_sign_in_email('ann@example.com'), auth.allow_sign_in_email('bob@example.com'))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PORTICO_ENV": "testing", "PORTICO_SECRET_KEY": secret, "PATH": "/usr/bin:/bin",
             "PORTICO_DATABASE_URL": app.config["DATABASE_URL"], "PORTICO_REDIS_URL": redis_url})
    assert other_worker.stdout.split() == ["False", "True"], other_worker.stderr


OTHER_WORKER = """
import sys
from werkzeug.exceptions import TooManyRequests
from core import auth, create_app

create_app().test_request_context().push()
try:
    auth.limit_emails(sys.argv[1], "198.51.100.7")
    print("sent")
except TooManyRequests:
    print("limited")
print(auth.failure_limited("sign-in-token", "198.51.100.7", "2 per hour") is not None)
"""


def test_email_and_failure_limits_hold_across_web_processes(make_app, heard, redis_url, customer):
    """With Redis, what one process counted (e-mails to a customer, invalid links from an
    address) another process sees too."""
    secret = "s" * 40
    app = make_app({"REDIS_URL": redis_url, "SECRET_KEY": secret,
                    "EMAIL_LIMIT_PER_CUSTOMER": "2 per hour"}, plugins=[heard])
    with app.test_request_context():
        limiter.reset()
        for _ in range(2):
            auth.limit_emails(customer.id, "198.51.100.7")
            auth.failure_limited("sign-in-token", "198.51.100.7", "2 per hour")
    other_worker = subprocess.run(
        [sys.executable, "-c", OTHER_WORKER, customer.id],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PORTICO_ENV": "testing", "PORTICO_SECRET_KEY": secret, "PATH": "/usr/bin:/bin",
             "PORTICO_DATABASE_URL": app.config["DATABASE_URL"], "PORTICO_REDIS_URL": redis_url,
             "PORTICO_EMAIL_LIMIT_PER_CUSTOMER": "2 per hour"})
    assert other_worker.stdout.split() == ["limited", "True"], other_worker.stderr


def test_emailed_link_uses_the_configured_address_whatever_the_host_header(client, business, customer, heard):
    """Target 9: a forged Host (or X-Forwarded-Host) never gets into the link."""
    request_link(client, business, "ann@example.com", base_url="http://evil.example",
                 headers={"X-Forwarded-Host": "evil.example"})
    [link] = heard.links()
    assert link.startswith("http://portal.test/session/")


# --- Magic links ----------------------------------------------------------------------------


def test_sign_in_token_is_long_random_and_stored_only_as_its_hash(client, business, customer, heard):
    request_link(client, business, "ann@example.com")
    [link] = heard.links()
    token = link.rsplit("/", 1)[1]
    assert len(token) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", token)
    [row] = PortalToken.select()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = db.execute_sql("SELECT * FROM portal_token").fetchall()
    assert token not in repr(stored)
    assert auth.sign_in_link(customer).rsplit("/", 1)[1] != token


def test_raw_token_never_reaches_the_job_queue_nor_the_logs(make_app, heard, redis_url, business,
                                                             customer, caplog):
    """Target 1, in production: the job that sends the link mints it, and nothing logs it."""
    caplog.set_level(logging.DEBUG)
    app = make_app({"ENV": "production", "SECRET_KEY": "p" * 48, "REDIS_URL": redis_url,
                    "QUEUE_NAME": f"access-{time.time_ns()}"}, plugins=[heard])
    client = app.test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    with app.app_context():
        limiter.reset()
        request_link(client, business, "ann@example.com", base_url="https://portal.test")
        [job] = queue().jobs
        assert job.func is auth.request_sign_in_link
        job.perform()
        [link] = heard.links()
        token = link.rsplit("/", 1)[1]
        path = urlsplit(link).path
        page = client.get(path, base_url="https://portal.test")
        answer = client.post(path, data={"csrf_token": csrf_token(page.text)},
                             base_url="https://portal.test")
        assert answer.status_code == 303
        connection = queue().connection
        for key in connection.scan_iter():
            assert token.encode() not in (connection.dump(key) or b"")
    assert token not in caplog.text
    assert not any(token in repr(row.detail) for row in AuditLog.select())


def test_opening_a_link_shows_a_continue_page_and_signs_nobody_in(client, customer):
    """Target 5: mail scanners fetch links with HEAD and GET; only a POST signs in."""
    path = urlsplit(auth.sign_in_link(customer)).path
    scanner = client.application.test_client()
    assert scanner.head(path, headers=SCANNER).status_code == 200
    page = scanner.get(path, headers=SCANNER)
    assert page.status_code == 200
    assert "Sign in to Acme Software" in page.text
    assert re.search(r'<form method="post" data-continue', page.text)
    assert PortalToken.get().used_at is None and PortalSession.select().count() == 0
    assert signed_in_session(scanner) is None
    answer = client.post(path, data={"csrf_token": csrf_token(client.get(path).text)})
    assert answer.status_code == 303


def test_continuing_signs_the_customer_in_and_lands_on_a_url_without_the_token(client, customer):
    answer = use_link(client, auth.sign_in_link(customer))
    assert answer.status_code == 303 and answer.headers["Location"] == "/portal/"
    portal = client.get("/portal/")
    assert portal.status_code == 200
    assert "Hello Ann Example" in portal.text and "ann@example.com" in portal.text
    [record] = PortalSession.select()
    assert (record.customer_id, record.ip) == (customer.id, "127.0.0.1")


def test_magic_link_cannot_be_used_twice(client, customer):
    link = auth.sign_in_link(customer)
    assert use_link(client, link).status_code == 303
    replay = client.application.test_client()
    answer = use_link(replay, link)
    assert answer.status_code == 410 and EXPIRED in answer.text
    assert signed_in_session(replay) is None
    assert replay.get("/portal/").status_code == 302
    assert PortalSession.select().count() == 1


def test_a_newer_link_replaces_the_older_ones(client, customer):
    first, second = auth.sign_in_link(customer), auth.sign_in_link(customer)
    answer = use_link(client, first)
    assert answer.status_code == 410 and EXPIRED in answer.text
    assert use_link(client.application.test_client(), second).status_code == 303


def test_a_used_link_offers_a_new_link_from_its_business(client, business, customer):
    link = auth.sign_in_link(customer)
    use_link(client.application.test_client(), link)
    page = client.get(urlsplit(link).path)
    assert page.status_code == 410 and EXPIRED in page.text
    assert f'action="/test/login/{business.id}"' in page.text and "Send me a new link" in page.text


def test_an_unknown_link_gets_the_same_page_without_a_business(client):
    page = client.get("/session/" + "x" * 43)
    assert page.status_code == 410 and EXPIRED in page.text
    assert "open the sign-in page of the business you bought from" in page.text


def test_twenty_concurrent_uses_of_a_link_create_exactly_one_session(live_server, customer):
    """Target 3: twenty browsers post the same link at the same instant, over real HTTP."""
    path = urlsplit(auth.sign_in_link(customer)).path
    barrier = threading.Barrier(20)
    statuses = []

    def browser():
        with httpx.Client(base_url=live_server.url, timeout=30) as http:
            token = csrf_token(http.get(path).text)
            barrier.wait()
            statuses.append(http.post(path, data={"csrf_token": token}).status_code)

    threads = [threading.Thread(target=browser) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [303] + [410] * 19
    assert PortalSession.select().count() == 1


def test_link_works_until_its_last_second_and_not_after(client, business, customer):
    other = Customer.create(business=business, mode="test", email="bob@example.com")
    issued = utcnow()
    with time_machine.travel(issued, tick=False):
        first, second = auth.sign_in_link(customer), auth.sign_in_link(other)
    with time_machine.travel(issued + timedelta(hours=24, seconds=-1), tick=False):
        assert use_link(client, first).status_code == 303
    with time_machine.travel(issued + timedelta(hours=24, seconds=1), tick=False):
        assert use_link(client.application.test_client(), second).status_code == 410


def test_link_for_one_business_never_signs_in_to_another(client, business, customer, other_business):
    namesake = Customer.create(business=other_business, mode="test", email=customer.email,
                               name="Ann at Other")
    sign_in(client, customer)
    portal = client.get("/portal/")
    assert "Acme Software" in portal.text and "Other Shop" not in portal.text
    assert PortalSession.get().customer_id == customer.id
    moved = auth.sign_in_link(namesake)
    PortalToken.update(business=business.id).where(PortalToken.customer == namesake).execute()
    assert use_link(client.application.test_client(), moved).status_code == 410


def test_test_mode_link_never_signs_in_to_live_mode(client, business, customer):
    live_twin = Customer.create(business=business, mode="live", email=customer.email)
    record = sign_in(client, customer)
    assert (record.mode, record.customer_id) == ("test", customer.id)
    assert "Test mode" in client.get("/portal/").text
    moved = auth.sign_in_link(live_twin)
    PortalToken.update(mode="test").where(PortalToken.customer == live_twin).execute()
    assert use_link(client.application.test_client(), moved).status_code == 410


def test_only_sign_in_links_open_a_session(client, app, customer):
    token = auth.issue_token(customer, "email_change", 600, {"new_email": "new@example.com"})
    answer = use_link(client, f"http://portal.test/session/{token}")
    assert answer.status_code == 410
    assert PortalToken.get().used_at is None and PortalSession.select().count() == 0
    assert AuditLog.get(AuditLog.event == "sign_in").outcome == "wrong_purpose"


def test_a_link_sent_before_the_email_address_changed_no_longer_works(client, customer):
    link = auth.sign_in_link(customer)
    Customer.update(email="ann.new@example.com").where(Customer.id == customer.id).execute()
    assert use_link(client, link).status_code == 410


def test_a_blocked_customer_can_no_longer_sign_in_or_stay_signed_in(client, customer):
    sign_in(client, customer)
    link = auth.sign_in_link(customer)
    Customer.update(blocked_at=utcnow()).where(Customer.id == customer.id).execute()
    assert client.get("/portal/").status_code == 302
    assert use_link(client.application.test_client(), link).status_code == 410


def test_invalid_links_opened_from_one_network_are_throttled(client):
    for n in range(30):
        assert client.get(f"/session/guess{n:040d}").status_code == 410
    answer = client.get("/session/guess-number-thirty-one")
    assert answer.status_code == 429
    assert "Too many invalid sign-in links" in answer.text and answer.headers["Retry-After"]


def test_token_pages_send_no_referrer_and_no_store(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path
    page = client.get(path)
    used = client.post(path, data={"csrf_token": csrf_token(page.text)})
    replay = client.get(path)
    for answer in (page, used, replay):
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
    assert (page.status_code, used.status_code, replay.status_code) == (200, 303, 410)


def test_development_server_access_log_never_shows_a_token(live_server, customer, caplog):
    caplog.set_level(logging.INFO, logger="werkzeug")
    token = urlsplit(auth.sign_in_link(customer)).path.rsplit("/", 1)[1]
    httpx.get(f"{live_server.url}/session/{token}")
    assert "/session/[redacted]" in caplog.text
    assert token not in caplog.text


def test_forwarded_addresses_count_only_through_the_configured_proxies(make_app, business):
    for hops, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        app = make_app({"PROXY_HOPS": hops})
        with app.app_context():
            request_link(app.test_client(), business, f"hops{hops}@example.com",
                         headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
            latest = AuditLog.select().order_by(AuditLog.created_at.desc()).first()
            assert latest.ip == expected


# --- Sessions ---------------------------------------------------------------------------------


def test_signing_in_starts_a_new_session_and_drops_what_was_planted(client, customer):
    """Target 10: nothing set in the browser before sign-in survives it."""
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
        session["_user_id"] = "ses_planted"
    first = sign_in(client, customer)
    with client.session_transaction() as session:
        assert "planted" not in session and session["_user_id"] == first.id
    second = sign_in(client, customer)
    assert second.id != first.id


def test_session_cookie_is_host_only_secure_httponly_and_lax_in_production(make_app, business, customer):
    """Target 11 (the Flask defaults, ``Secure`` off and no ``SameSite``, would fail it)."""
    app = make_app({"ENV": "production", "SECRET_KEY": "p" * 48})
    client = app.test_client()
    with app.app_context():
        path = urlsplit(auth.sign_in_link(customer)).path
    page = client.get(path, base_url="https://portal.test")
    answer = client.post(path, data={"csrf_token": csrf_token(page.text)}, base_url="https://portal.test")
    [cookie] = answer.headers.getlist("Set-Cookie")
    name, _, attributes = cookie.partition(";")
    assert name.startswith("__Host-portico=")
    assert {a.strip() for a in attributes.split(";")} == {"Secure", "HttpOnly", "Path=/", "SameSite=Lax"}
    assert answer.headers["Strict-Transport-Security"].startswith("max-age=63072000")


def test_logout_ends_the_session_on_the_server(client, business, customer):
    """Target 12: a copy of the cookie is worth nothing after logout."""
    record = sign_in(client, customer)
    cookie = client.get_cookie("portico").value
    answer = client.post("/logout", data={"csrf_token": csrf_for(client)})
    assert answer.status_code == 303
    assert answer.headers["Clear-Site-Data"] == '"cache", "cookies", "storage"'
    assert "You are signed out" in client.get(answer.headers["Location"]).text
    assert PortalSession.get_by_id(record.id).revoked_at is not None
    replay = client.application.test_client()
    replay.set_cookie("portico", cookie)
    again = replay.get("/portal/")
    assert again.status_code == 302 and again.headers["Location"] == f"/test/login/{business.id}"


def test_sign_out_everywhere_ends_every_session_and_unused_link(client, customer):
    phone = client.application.test_client()
    sign_in(phone, customer)
    sign_in(client, customer)
    waiting = auth.sign_in_link(customer)
    answer = client.post("/logout/everywhere", data={"csrf_token": csrf_for(client)},
                         follow_redirects=True)
    assert "Every session of your Acme Software account has ended" in answer.text
    assert phone.get("/portal/").status_code == 302
    assert use_link(phone, waiting).status_code == 410
    assert PortalSession.select().where(PortalSession.revoked_at.is_null()).count() == 0


def test_session_ends_after_thirty_idle_minutes(client, customer):
    start = utcnow()
    with time_machine.travel(start, tick=False) as clock:
        sign_in(client, customer)
        clock.shift(timedelta(minutes=29))
        assert client.get("/portal/").status_code == 200
        clock.shift(timedelta(minutes=31))
        assert client.get("/portal/").status_code == 302


def test_session_ends_at_its_absolute_expiry_however_active(make_app, customer):
    app = make_app({"SESSION_TTL": 3600})
    client = app.test_client()
    start = utcnow()
    with app.app_context(), time_machine.travel(start, tick=False) as clock:
        sign_in(client, customer)
        for _ in range(3):
            clock.shift(timedelta(minutes=19, seconds=50))
            assert client.get("/portal/").status_code == 200
        clock.shift(timedelta(seconds=40))
        assert client.get("/portal/").status_code == 302


def test_a_visitor_without_a_session_is_told_how_to_sign_in(client):
    answer = client.get("/portal/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/signed-out"
    assert "You are not signed in" in client.get("/signed-out").text


def test_portal_links_back_to_the_business_and_is_never_cached(client, business, customer):
    Business.update(default_return_url="https://acme.test/account").where(
        Business.id == business.id).execute()
    sign_in(client, customer)
    portal = client.get("/portal/")
    assert '<a class="back" href="https://acme.test/account">← Return to Acme Software</a>' in portal.text
    assert portal.headers["Cache-Control"] == "no-store"


# --- Changing e-mail --------------------------------------------------------------------------


def request_change(client, customer, new_email):
    record = PortalSession.get_by_id(signed_in_session(client))
    auth.request_email_change(record, new_email, ip="127.0.0.1")


def test_changing_email_needs_a_recent_sign_in(client, customer, heard):
    start = utcnow()
    with time_machine.travel(start, tick=False) as clock:
        sign_in(client, customer)
        clock.shift(timedelta(minutes=16))
        with pytest.raises(auth.ReauthenticationRequired):
            request_change(client, customer, "ann.new@example.com")
    assert heard.notifications == []


def test_new_address_confirms_before_the_email_changes(client, customer, heard):
    sign_in(client, customer)
    request_change(client, customer, "Ann.New@example.com")
    [note] = heard.of_type("customer.email_change")
    assert note.data["email"] == "ann.new@example.com"
    assert note.secrets["link"].startswith("http://portal.test/email/confirm/")
    path = urlsplit(note.secrets["link"]).path
    page = client.get(path)
    assert "Confirm your new e-mail address" in page.text and page.headers["Referrer-Policy"] == "no-referrer"
    assert Customer.get_by_id(customer.id).email == "ann@example.com"
    answer = client.post(path, data={"csrf_token": csrf_token(page.text)})
    assert answer.status_code == 303
    assert Customer.get_by_id(customer.id).email == "ann.new@example.com"
    assert "Your e-mail address is now ann.new@example.com." in client.get("/portal/").text


def test_confirming_a_new_email_ends_other_sessions_and_links_and_renews_this_one(client, customer, heard):
    laptop = client.application.test_client()
    sign_in(laptop, customer)
    before = sign_in(client, customer)
    waiting = auth.sign_in_link(customer)
    request_change(client, customer, "ann.new@example.com")
    assert use_link(client, heard.links("customer.email_change")[0]).status_code == 303
    assert laptop.get("/portal/").status_code == 302
    assert use_link(laptop, waiting).status_code == 410
    assert signed_in_session(client) != before.id
    assert client.get("/portal/").status_code == 200


def test_old_address_is_told_of_the_change_without_any_link(client, customer, heard):
    sign_in(client, customer)
    request_change(client, customer, "ann.new@example.com")
    use_link(client, heard.links("customer.email_change")[0])
    [notice] = heard.of_type("customer.email_changed")
    assert notice.data == {"email": "ann@example.com"} and notice.secrets == {}


def test_an_address_used_by_another_customer_changes_nothing_and_sends_nothing(client, business,
                                                                              customer, heard):
    Customer.create(business=business, mode="test", email="taken@example.com")
    sign_in(client, customer)
    request_change(client, customer, "taken@example.com")
    assert heard.notifications == [] and PortalToken.select().where(
        PortalToken.purpose == "email_change").count() == 0
    assert Customer.get_by_id(customer.id).email == "ann@example.com"
    assert AuditLog.get(AuditLog.event == "email_change.requested").outcome == "address_taken"


def test_a_sign_in_link_cannot_change_an_email_address(client, customer):
    path = urlsplit(auth.sign_in_link(customer)).path.replace("/session/", "/email/confirm/")
    assert client.post(path, data={"csrf_token": csrf_for(client)}).status_code == 410


# --- The audit log ----------------------------------------------------------------------------


def test_sign_in_events_are_logged_without_any_secret(client, business, customer, heard, caplog):
    """Target 14: who, what, when, from where, and the outcome; never a token or cookie."""
    caplog.set_level(logging.INFO, logger="portico.audit")
    request_link(client, business, "ann@example.com")
    request_link(client, business, "stranger@example.com")
    link = heard.links()[0]
    use_link(client, link)
    use_link(client.application.test_client(), link)
    cookie = client.get_cookie("portico").value
    request_change(client, customer, "ann.new@example.com")
    use_link(client, heard.links("customer.email_change")[0])
    client.post("/logout", data={"csrf_token": csrf_for(client)})
    sign_in(client, Customer.get_by_id(customer.id))
    client.post("/logout/everywhere", data={"csrf_token": csrf_for(client)})

    events = [(row.event, row.outcome) for row in AuditLog.select().order_by(AuditLog.created_at)]
    for expected in [("sign_in_link.requested", "ok"), ("sign_in_link.requested", "unknown_email"),
                     ("sign_in", "ok"), ("sign_in", "used"), ("email_change.requested", "ok"),
                     ("email_change", "ok"), ("sign_out", "ok"), ("sign_out_everywhere", "ok")]:
        assert expected in events
    unknown = AuditLog.get(AuditLog.outcome == "unknown_email")
    assert unknown.business_id == business.id and unknown.detail["email_hash"]
    assert all(row.ip == "127.0.0.1" and row.created_at for row in AuditLog.select())
    secrets = [link.rsplit("/", 1)[1], cookie, heard.links("customer.email_change")[0].rsplit("/", 1)[1]]
    stored = repr(db.execute_sql("SELECT * FROM audit_log").fetchall())
    for secret in secrets:
        assert secret not in stored and secret not in caplog.text
    assert "stranger@example.com" not in stored and "stranger@example.com" not in caplog.text
    assert "event=sign_in outcome=used" in caplog.text


# --- CSRF and headers on every page ---------------------------------------------------------


def form_routes(app):
    """Every cookie-authenticated route that changes state, with sample arguments."""
    samples = {"business_id": "bus_x", "token": "t" * 43, "customer_id": "cus_x", "key_id": "key_x",
               "endpoint_id": "whk_x", "action": "disable", "mode": "test"}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(("signin.", "portal.", "dashboard.")) and "POST" in rule.methods:
            yield rule.build({name: samples.get(name, "x") for name in rule.arguments},
                             append_unknown=False)[1]


def test_every_form_is_refused_without_a_valid_csrf_token(app, client, customer):
    """Target 32: no token, another session's token, or an expired token: 400, nothing done."""
    record = sign_in(client, customer)
    mine, foreign = csrf_for(client), csrf_for(app.test_client())
    later = utcnow() + timedelta(hours=1, minutes=1)  # WTF_CSRF_TIME_LIMIT is an hour
    routes = list(form_routes(app))
    assert len(routes) >= 15
    for path in routes:
        for data, when in (({}, None), ({"csrf_token": foreign}, None), ({"csrf_token": mine}, later)):
            with time_machine.travel(when or utcnow(), tick=False):
                answer = client.post(path, data=data)
            assert answer.status_code == 400, path
            assert "This form has expired or was sent from another site" in answer.text
    assert PortalSession.get_by_id(record.id).revoked_at is None
    assert client.get("/portal/").status_code == 200
    assert AuditLog.select().count() == 1  # the sign-in


def test_a_form_posted_from_another_site_is_refused_even_with_its_token(client, customer):
    sign_in(client, customer)
    answer = client.post("/logout", data={"csrf_token": csrf_for(client)},
                         headers={"Sec-Fetch-Site": "cross-site"})
    assert answer.status_code == 400
    assert client.get("/portal/").status_code == 200


def test_the_api_and_the_stripe_webhook_are_the_only_csrf_exemptions(app):
    csrf = app.extensions["csrf"]
    assert {blueprint.name for blueprint in csrf._exempt_blueprints} == {"api"}
    assert csrf._exempt_views <= {"portico_stripe.views.webhook"}  # Stripe signs its events instead


def snapshot():
    """Every row of every table, except the last-seen times a visit refreshes."""
    tables = {}
    for model in MODELS:
        rows = model.select().dicts()
        tables[model.__name__] = sorted(repr({k: v for k, v in row.items() if k != "last_seen_at"})
                                        for row in rows)
    return tables


def test_get_requests_change_nothing(app, client, business, customer):
    """Target 32: every page, opened signed in as a customer and as a merchant, changes no data."""
    from core.models import ApiKey, WebhookEndpoint

    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery")
    key, _ = auth.create_api_key(business, "test")
    endpoint = WebhookEndpoint.create(business=business, mode="test", url="https://hooks.acme.test/x",
                                      secret="whsec_x")
    token = urlsplit(auth.sign_in_link(customer)).path.rsplit("/", 1)[1]
    other = Customer.create(business=business, mode="test", email="bob@example.com")
    sign_in(client, other)
    merchant = app.test_client()
    page = merchant.get("/dashboard/login")
    merchant.post("/dashboard/login", data={"csrf_token": csrf_token(page.text),
                                            "email": "owner@acme.test", "password": "correct horse battery"})
    samples = {"business_id": business.id, "token": token, "customer_id": customer.id,
               "key_id": key.id, "endpoint_id": endpoint.id, "mode": "test"}
    before = snapshot()
    for rule in app.url_map.iter_rules():
        if "GET" in rule.methods and rule.endpoint != "static":
            path = rule.build({name: samples.get(name, "x") for name in rule.arguments},
                              append_unknown=False)[1]
            for browser in (client, merchant):
                assert browser.get(path).status_code < 500, path
    assert snapshot() == before
    assert ApiKey.select().count() == 1
    assert PortalToken.get(PortalToken.customer == customer).used_at is None


def test_every_page_and_error_carries_the_security_headers(client, business, customer):
    """Target 33: strict CSP, no framing, no sniffing, on pages, redirects, errors and JSON."""
    for _ in range(30):
        client.get("/session/" + "g" * 43)
    answers = [client.get(static_path(business)), client.get("/nowhere"), client.get("/portal/"),
               client.get("/session/" + "u" * 43), client.post("/logout"),
               client.post(f"/api/customers/{customer.id}/customer-portal/session"),
               client.get(f"/brand/{business.id}.css"), client.get("/dashboard/login")]
    assert [a.status_code for a in answers] == [200, 404, 302, 429, 400, 401, 200, 200]
    for answer in answers:
        csp = answer.headers["Content-Security-Policy"]
        for directive in ("object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'",
                          "script-src 'self'"):
            assert directive in csp
        assert "unsafe-inline" not in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] in ("same-origin", "no-referrer")


def test_pages_have_no_inline_script_or_style(client, business, customer):
    pages = [client.get(static_path(business)).text, client.get("/session/" + "u" * 43).text]
    sign_in(client, customer)
    pages.append(client.get("/portal/").text)
    for html in pages:
        assert not re.search(r"<script(?![^>]*\bsrc=)", html)
        assert " style=" not in html and "<style" not in html


# --- Redirect targets ------------------------------------------------------------------------

FOREIGN_TARGETS = ["/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "//evil.example",
                   "/\\evil.example", "\\\\evil.example", "https://evil.example/", "http:evil.example",
                   " //evil.example", "/\x00/evil.example", "javascript:alert(1)"]


def stays_here(answer, default):
    location = answer.headers["Location"]
    assert answer.status_code == 303, answer.status_code
    assert location == default, location


@pytest.mark.parametrize("target", FOREIGN_TARGETS)
def test_the_language_switch_never_sends_anyone_to_another_site(client, target):
    answer = client.post("/language", data={"csrf_token": csrf_for(client), "locale": "fr",
                                            "next": target})
    stays_here(answer, "/portal/")


@pytest.mark.parametrize("target", FOREIGN_TARGETS)
def test_the_dashboard_never_sends_anyone_to_another_site(client, business, target):
    auth.create_merchant_user(business, "owner@acme.test", "correct horse battery")
    answer = client.post("/dashboard/login", query_string={"next": target},
                         data={"csrf_token": csrf_for(client), "email": "owner@acme.test",
                               "password": "correct horse battery"})
    stays_here(answer, "/dashboard/customers")
    token = csrf_token(client.get("/dashboard/customers").text)
    answer = client.post("/dashboard/mode", data={"csrf_token": token, "mode": "live", "next": target})
    stays_here(answer, "/dashboard/customers")


@pytest.mark.parametrize("target", FOREIGN_TARGETS)
def test_a_sign_in_link_never_leads_to_another_site(client, customer, target):
    stays_here(use_link(client, auth.sign_in_link(customer, next=target)), "/portal/")


def test_local_targets_are_kept(client, customer):
    answer = client.post("/language", data={"csrf_token": csrf_for(client), "locale": "fr",
                                            "next": "/test/login/bus_1?x=1"})
    assert answer.headers["Location"] == "/test/login/bus_1?x=1"
    answer = use_link(client, auth.sign_in_link(customer, next="/portal/profile"))
    assert answer.headers["Location"] == "/portal/profile"


# --- Request size ----------------------------------------------------------------------------


class Counted:
    """A request body of ``size`` bytes that counts how much of it was read."""

    def __init__(self, size, chunk=b"x" * 65536):
        self.left, self.read_bytes, self.chunk = size, 0, chunk

    def read(self, size=-1):
        size = len(self.chunk) if size is None or size < 0 else min(size, len(self.chunk))
        size = min(size, self.left)
        self.left -= size
        self.read_bytes += size
        return self.chunk[:size]

    def readline(self, size=-1):
        return self.read(size)


def send(app, path, body, headers, chunked):
    """Send ``body`` to ``path`` as a WSGI server does: with its length, or chunked (no
    length; the server says the stream ends by itself)."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    environ = EnvironBuilder(path=path, method="POST", headers=headers).get_environ()
    environ["wsgi.input"] = body
    if chunked:
        environ.pop("CONTENT_LENGTH", None)
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
        environ["wsgi.input_terminated"] = True
    else:
        environ["CONTENT_LENGTH"] = str(body.left)
    iterable, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), b"".join(iterable).decode()


BIG = 20 * 1024 * 1024


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_api_body_is_refused_before_it_is_read(app, business, chunked):
    _, key = auth.create_api_key(business, "test")
    body = Counted(BIG, chunk=b" " * 65536)
    status, text = send(app, "/api/customers", body, {"Authorization": f"Bearer {key}",
                                                      "Content-Type": "application/json"}, chunked)
    assert status == 413 and '"INVALID_REQUEST_BODY"' in text
    assert body.read_bytes <= 512 * 1024
    assert Customer.select().count() == 0


@pytest.mark.parametrize("chunked", [False, True])
def test_a_large_form_is_refused_before_it_is_read(app, chunked):
    body = Counted(BIG)
    status, text = send(app, "/language", body,
                        {"Content-Type": "multipart/form-data; boundary=x"}, chunked)
    assert status == 413 and "What was sent is too large." in text
    assert body.read_bytes <= 512 * 1024


# --- Shared networks -------------------------------------------------------------------------


def test_invalid_links_from_one_network_never_lock_out_valid_ones(client, business, customer):
    """People behind one office NAT: one person's old links must not lock out the others."""
    for n in range(31):
        client.get(f"/session/guess{n:040d}")
    assert client.get("/session/guess-again").status_code == 429
    colleague = Customer.create(business=business, mode="test", email="bob@example.com", name="Bob")
    link = auth.sign_in_link(colleague)
    assert client.get(urlsplit(link).path).status_code == 200
    assert use_link(client, link).status_code == 303
    assert "Hello Bob" in client.get("/portal/").text


def test_development_server_access_log_never_shows_a_card_form_state(live_server, app, customer,
                                                                     caplog):
    from core.plugins import registry

    caplog.set_level(logging.INFO, logger="werkzeug")
    url = registry(app).provider("sandbox").setup_url(customer=customer,
                                                      return_url="http://portal.test/back")
    state = re.search(r"state=([^&]+)", url)[1]
    httpx.get(live_server.url + urlsplit(url).path + "?" + urlsplit(url).query)
    assert "state=[redacted]" in caplog.text
    assert state not in caplog.text


# --- Dead ends -----------------------------------------------------------------------------


def forget_cookies(client):
    """What a browser does with the sign-out's ``Clear-Site-Data: "cookies"``."""
    client._cookies.clear()


@pytest.mark.parametrize("everywhere", [False, True])
def test_a_french_customer_signing_out_lands_on_their_business_page_in_french(client, business,
                                                                              customer, everywhere):
    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    sign_in(client, customer)
    answer = client.post("/logout/everywhere" if everywhere else "/logout",
                         data={"csrf_token": csrf_for(client)})
    assert answer.status_code == 303 and answer.headers["Clear-Site-Data"]
    forget_cookies(client)
    page = client.get(answer.headers["Location"])
    assert "Vous êtes déconnecté" in page.text and "Acme Software" in page.text
    assert f'href="/test/login/{business.id}"' in page.text
    if everywhere:
        assert "Toutes les sessions de votre compte Acme Software" in page.text

    back = client.get("/portal/")  # later, a bookmark
    assert back.status_code == 302 and back.headers["Location"] == f"/test/login/{business.id}"
    assert "Connexion à Acme Software" in client.get(back.headers["Location"]).text


def test_a_session_that_ended_leads_to_the_business_sign_in_page_in_the_customers_language(
        client, business, customer):
    Customer.update(preferred_locale="fr").where(Customer.id == customer.id).execute()
    with time_machine.travel(utcnow(), tick=False) as clock:
        sign_in(client, customer)
        clock.shift(timedelta(minutes=31))
        back = client.get("/portal/")
    assert back.headers["Location"] == f"/test/login/{business.id}"
    assert "Connexion à Acme Software" in client.get(back.headers["Location"]).text


def test_reloading_the_check_your_inbox_page_sends_nothing_more(client, business, customer, heard):
    page = client.get(static_path(business))
    answer = client.post(static_path(business), data={"csrf_token": csrf_token(page.text),
                                                      "email": "ann@example.com"})
    assert answer.status_code == 303
    assert answer.headers["Location"] == f"/test/login/{business.id}/sent"
    for _ in range(3):
        sent = client.get(answer.headers["Location"])
        assert "If <strong>ann@example.com</strong> has purchases at Acme Software" in sent.text
    assert len(heard.links()) == 1
    assert client.application.test_client().get(answer.headers["Location"]).status_code == 303
