"""The built docs site in Chromium, served from 127.0.0.1: the landing page's embedded static
explorer answers a menu, an API page and a rendered notebook (its saved widgets drawn by the
site's own widget manager) open, and no request leaves the machine (every request to another
address is refused and counted)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

pytestmark = pytest.mark.e2e


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no access log in the test output
        pass


@pytest.fixture
def site_url(built_site):
    handler = functools.partial(QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture
def offline_page(page, site_url):
    """The page with every request outside the local site refused and recorded."""
    page.left = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(site_url) or url.startswith("data:"):
            request_route.continue_()
        else:
            page.left.append(url)
            request_route.abort()

    page.context.route("**/*", route)
    return page


def test_the_landing_pages_explorer_switches_its_picture(offline_page, site_url):
    page = offline_page
    page.goto(site_url + "index.html")
    explorer = page.frame_locator("iframe.gw-live-explorer")
    overlay = explorer.locator("#gw-overlay")
    overlay.wait_for()
    page.wait_for_function(  # the page's script has drawn its first picture
        "() => (document.querySelector('iframe.gw-live-explorer').contentDocument"
        ".querySelector('#gw-overlay').getAttribute('src') || '').startsWith('data:image/')"
    )
    before = overlay.get_attribute("src")
    caption_before = explorer.locator("#gw-caption").inner_text()
    explorer.locator("#gw-layer").select_option("block4_conv2")
    page.wait_for_function(
        "before => document.querySelector('iframe.gw-live-explorer').contentDocument"
        ".querySelector('#gw-overlay').src !== before",
        arg=before,
    )
    after = overlay.get_attribute("src")
    assert after.startswith("data:image/") and after != before
    assert explorer.locator("#gw-caption").inner_text() != (caption_before)
    for guide in ("explore", "audit", "teach"):
        assert page.locator(f"a[href='guides/{guide}.html']").count() >= 1, guide
    assert page.left == [], page.left


def test_an_api_page_and_a_rendered_notebook_open(offline_page, site_url):
    page = offline_page
    page.goto(site_url + "api/gw.html")
    assert page.locator("[id='gradcam_widget.capture']").is_visible()
    assert (
        "activations and gradients"
        in page.locator("[id='gradcam_widget.capture'] + dd").inner_text()
    )

    page.goto(site_url + "notebooks/01_quickstart.html")
    images = page.locator(".jupyter-widgets img")
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.jupyter-widgets img'))"
        ".filter(img => img.complete && img.naturalWidth > 100).length >= 4",
        timeout=60_000,
    )
    assert images.count() >= 4
    page.wait_for_function(  # the explorer's menus, drawn from the saved state
        "() => document.querySelectorAll('.jupyter-widgets select').length >= 6"
    )
    assert page.left == [], page.left
