"""The home page of a development install links each business's sign-in pages."""

import pytest

from core.demo import seed

pytestmark = pytest.mark.browser


def test_home_page_links_the_demo_static_links_in_a_browser(app, live_server, page):
    demo = seed(app)
    page.goto(live_server.url + "/")
    assert page.get_by_role("heading", name="Portico").is_visible()
    hrefs = page.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    assert demo["static_links"]["live"] in hrefs
    assert demo["static_links"]["test"] in hrefs
    page.screenshot_as("home")
