"""What the server serves for the web page: `/` and its assets without a key, under a
Content-Security-Policy without inline script; the chart library from the installed `plotly`
package; nothing outside service/static/; page scripts that never parse HTML."""
from __future__ import annotations

import posixpath
import re
from html.parser import HTMLParser
import pytest

from service import web

STATIC = web.STATIC_DIR
MIMETYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
IMPORT = re.compile(r"""^\s*(?:import|export)\b[^"']*?from\s+["'](\.{1,2}/[^"']+)["']""", re.M)
HTML_SINKS = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                        r"setAttribute\(\s*[\"']on|localStorage")


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.assets: list[str] = []
        self.handlers: list[str] = []
        self.inputs: list[dict[str, str | None]] = []
        self._script: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.handlers += [f"{tag}.{name}" for name in attributes if name.startswith("on")]
        self.assets += [value for name, value in attrs if name in ("src", "href") and value and value.startswith("/")]
        if tag == "script":
            self._script = attributes
            self.scripts.append((attributes, ""))
        if tag == "input":
            self.inputs.append(attributes)

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            attributes, body = self.scripts[-1]
            self.scripts[-1] = (attributes, body + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = None


def csp(response) -> dict[str, list[str]]:  # noqa: ANN001
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def parsed_page(client) -> PageParser:  # noqa: ANN001
    parser = PageParser()
    parser.feed(client.get("/").get_data(as_text=True))
    return parser


def module_graph(client) -> set[str]:  # noqa: ANN001
    """Every URL the page loads: index.html's assets and, transitively, each module's imports."""
    seen: set[str] = set()
    pending = list(parsed_page(client).assets)
    while pending:
        url = pending.pop()
        if url in seen:
            continue
        seen.add(url)
        if url.endswith(".js") and "/vendor/" not in url:
            source = client.get(url).get_data(as_text=True)
            base = posixpath.dirname(url)
            pending += [posixpath.normpath(posixpath.join(base, relative)) for relative in IMPORT.findall(source)]
    return seen


def test_the_page_is_served_without_a_key_under_a_strict_policy(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    policy = csp(response)
    assert policy["script-src"] == ["'self'"], "scripts only from the page's own origin: no inline, no eval"
    assert policy["default-src"] == ["'none'"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/v1/jobs").status_code == 401, "the page opens no API route"


def test_the_page_has_no_inline_script_and_no_inline_handlers(client):
    page = parsed_page(client)
    assert page.scripts, "the page loads its scripts"
    for attributes, body in page.scripts:
        assert attributes.get("src", "").startswith("/ui/") and body.strip() == "", attributes
    assert page.handlers == []
    assert [i.get("type") for i in page.inputs if i.get("id") == "api-key"] == ["password"]


def test_every_asset_the_page_loads_is_served_with_its_type_and_the_policy(client):
    urls = module_graph(client)
    assert {"/ui/js/app.js", "/ui/js/views/job.js", "/ui/js/charts.js", "/ui/vendor/plotly.min.js",
            "/ui/style.css"} <= urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.mimetype == MIMETYPES[posixpath.splitext(url)[1]], url
        assert csp(response)["script-src"] == ["'self'"], url


def test_the_chart_library_is_the_installed_plotly_bundle(client):
    response = client.get("/ui/vendor/plotly.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    installed = web.plotly_bundle()
    assert installed is not None and response.get_data() == installed.read_bytes()
    assert response.get_data()[:40].startswith(b"/**\n* plotly.js v")
    assert not [p for p in STATIC.rglob("*") if "plotly" in p.name.lower()], "no copy of plotly.js in the repository"


def test_without_plotly_the_bundle_route_says_what_to_install(client, monkeypatch):
    monkeypatch.setattr(web, "plotly_bundle", lambda: None)
    response = client.get("/ui/vendor/plotly.min.js")
    assert response.status_code == 404 and response.mimetype == "application/problem+json"
    assert "pip install plotly" in response.get_json()["detail"]


@pytest.mark.parametrize("path", ["/ui/../web.py", "/ui/%2e%2e/web.py", "/ui/js/../../web.py", "/ui/js/missing.js",
                                  "/ui/", "/ui/vendor/other.js"])
def test_nothing_outside_the_static_folder_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404, path
    assert response.mimetype == "application/problem+json"


def test_page_scripts_build_the_dom_without_parsing_html():
    sources = {path.name: path.read_text() for path in STATIC.rglob("*.js")}
    assert len(sources) >= 8
    offenders = {name: HTML_SINKS.findall(text) for name, text in sources.items() if HTML_SINKS.search(text)}
    assert offenders == {}
    api = sources["api.js"]
    assert "sessionStorage" in api and "Authorization" in api
    assert not any(re.search(r"[?&](api_?key|key|token)=", text) for text in sources.values()), "a key in a URL"
