"""The user documentation works: every ```bash block of the three guides, run verbatim.

For each document a real gateway (``uvicorn gateway:app``) is started on a free port over a
fresh store; the document's ```bash blocks are run in order as one ``bash -euo pipefail``
script, as a reader would paste them after ``make run`` and ``export OPENCLAW_ADMIN_TOKEN=...``.
The only change made to a block is ``localhost:18789`` -> ``127.0.0.1:<port>``.

What is checked:

* the script exits 0 (the docs use ``curl --fail-with-body``, so an unexpected 4xx/5xx fails);
* every HTTP call got its documented status: 201 for the two create routes, 200 otherwise,
  and for a deliberate error example (a block without ``--fail-with-body``) the status of the
  error code its sample shows;
* every ```json sample that directly follows a ```bash block is that block's real output,
  up to ids, keys, timestamps and dates;
* the delivery summary's four curl examples still give the summary's results.

Blocks the test must not run use other fence languages (```shell, ```text, ```python, ...).
"""

from __future__ import annotations

import importlib
import json
import re
import secrets
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from openclaw_billing.errors import BillingError
from openclaw_billing.stripe_billing import HANDLED_EVENTS
from tests.processes import run_in_group
from tests.server import REPO_ROOT, clean_env, running_gateway

#: The user documentation. The integration guide keeps the integration path; the endpoint
#: reference and the Stripe set-up are pages of their own under docs/.
DOCS = (
    "README.md",
    "CLIENT_AUTH_QUICK_START.md",
    "CLIENT_AUTH_INTEGRATION.md",
    "docs/ENDPOINTS.md",
    "docs/STRIPE.md",
)
#: Where the docs say the gateway is (``make run``).
DOC_HOST = "localhost:18789"
ADMIN_TOKEN = "docs-test-admin-" + secrets.token_urlsafe(24)

#: Status of each error code (CLIENT_AUTH_INTEGRATION.md, "Errors").
ERROR_STATUS = {
    "invalid_api_key": 401,
    "invalid_admin_token": 401,
    "credit_limit_reached": 402,
    "concurrency_limit_reached": 429,
    "illegal_transition": 409,
    "client_not_found": 404,
    "not_found": 404,
    "insufficient_credits": 409,
    "unlimited_plan": 409,
    "duplicate_client": 409,
    "validation_error": 422,
    "stripe_not_configured": 503,
    "admin_token_not_configured": 503,
    "store_unavailable": 503,
}
#: Successful calls answer 200, except these creations.
CREATED = {("POST", "/api/admin/clients"), ("POST", "/api/intake")}
#: ... and these, whose paths carry ids: issuing and rotating a key.
CREATED_PATHS = re.compile(r"^/api/admin/clients/[^/]+/keys(/key_[0-9a-f]{12}/rotate)?$")

_MARK = "@@docs-block"
_CURL_MARK = "@@curl"
#: Records method, URL and status of every curl call on stderr; a doc's own --write-out would
#: replace it, and the missing record fails the test.
_WRITE_OUT = "%{stderr}" + _CURL_MARK + " %{method} %{url_effective} %{response_code}\\n"
_PRELUDE = f"curl() {{ command curl --write-out '{_WRITE_OUT}' \"$@\"; }}\n"

_FENCE = re.compile(r"^(`{3,})([\w+-]*)[^\n]*$")
_KEY_RE = re.compile(r"oc_live_[0-9a-f]{32}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_PLACEHOLDERS = (
    (_KEY_RE, "<api_key>"),
    (re.compile(r"oc_live_[0-9a-f]{4}"), "<api_key_prefix>"),
    (re.compile(r"key_[0-9a-f]{12}"), "<key_id>"),
    (_UUID_RE, "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00"), "<timestamp>"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "<date>"),
    (re.compile(r"[0-9a-f]{64}"), "<sha256>"),
    (re.compile(r"oc_quote_[A-Za-z0-9_.-]+"), "<quote_id>"),
)


# -- reading the docs -------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int


def fenced_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].strip())
        if opening is None:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2)
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        assert j < len(lines), f"unclosed code fence at line {i + 1}"
        blocks.append(Block(lang, textwrap.dedent("\n".join(body)), i + 1))
        i = j + 1
    return blocks


def read_doc(name: str) -> str:
    return (REPO_ROOT / name).read_text(encoding="utf-8")


def sample_after(blocks: list[Block], index: int) -> Any | None:
    """The parsed ```json block right after block ``index`` (prose in between is fine)."""
    if index + 1 < len(blocks) and blocks[index + 1].lang == "json":
        return json.loads(blocks[index + 1].text)
    return None


def normalized(value: Any) -> Any:
    """``value`` with ids, keys, digests and timestamps replaced by placeholders."""
    if isinstance(value, dict):
        return {key: normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [normalized(item) for item in value]
    if isinstance(value, str):
        for pattern, placeholder in _PLACEHOLDERS:
            if pattern.fullmatch(value):
                return placeholder
    return value


def curl_count(text: str) -> int:
    """How many curl commands a block's text holds."""
    return len(re.findall(r"(?<![\w./-])curl\s", text))


# -- running them -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CurlCall:
    method: str
    path: str
    status: int


@dataclass(frozen=True)
class BlockRun:
    stdout: str
    calls: list[CurlCall]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    """A real ``uvicorn gateway:app`` over a fresh store; yields ``127.0.0.1:<port>``."""
    with running_gateway(tmp_path, admin_token=ADMIN_TOKEN) as base:
        yield base.removeprefix("http://")


def run_script(blocks: list[str], host: str, tmp_path: Path) -> list[BlockRun]:
    """Run ``blocks`` as one ``bash -euo pipefail`` script against ``host``; one result per
    block. Fails the test if the script fails."""
    parts = [_PRELUDE]
    for index, text in enumerate(blocks):
        marker = f"printf '\\n{_MARK} {index}\\n'"
        parts += [f"{marker}\n{marker} >&2", text.replace(DOC_HOST, host)]
    script = tmp_path / "docs.sh"
    script.write_text("\n".join(parts) + "\n", encoding="utf-8")
    env = clean_env() | {"OPENCLAW_ADMIN_TOKEN": ADMIN_TOKEN}
    done = run_bash(script, cwd=tmp_path, env=env, timeout=180)
    assert done.returncode == 0, (
        f"the examples failed with exit code {done.returncode}\n"
        f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )
    outputs = _split(done.stdout)
    calls = [
        [_parse_call(line) for line in chunk.splitlines() if line.startswith(_CURL_MARK)]
        for chunk in _split(done.stderr)
    ]
    assert len(outputs) == len(calls) == len(blocks), done.stdout + done.stderr
    return [BlockRun(out.strip(), call) for out, call in zip(outputs, calls, strict=True)]


def run_bash(
    script: Path, *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """``bash -euo pipefail script`` in its own process group: on a timeout the script and
    every command it started (a hanging curl) are stopped, not only bash."""
    done, timed_out = run_in_group(
        ["bash", "-euo", "pipefail", str(script)],
        timeout=timeout,
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
    )
    if timed_out:
        pytest.fail(f"the examples did not finish in {timeout} s:\n{done.stdout}\n{done.stderr}")
    return done


def _split(stream: str) -> list[str]:
    """The output of each block, by the markers written between blocks."""
    chunks = re.split(rf"(?m)^{_MARK} \d+$", stream)
    return chunks[1:]


def _parse_call(line: str) -> CurlCall:
    _, method, url, status = line.split(" ")
    return CurlCall(method, httpx.URL(url).path, int(status))


def success_status(call: CurlCall) -> int:
    if (call.method, call.path) in CREATED:
        return 201
    return 201 if call.method == "POST" and CREATED_PATHS.match(call.path) else 200


def parse_output(stdout: str, where: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        pytest.fail(f"{where}: the output is not one JSON document:\n{stdout}")


# -- the docs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCS)
def test_doc_fences_are_as_the_test_expects(name: str) -> None:
    """Runnable curl is ```bash and nothing else is; the rest parses; make run/test named."""
    text = read_doc(name)
    assert "make run" in text
    assert "make test" in text
    blocks = fenced_blocks(text)
    for block in blocks:
        where = f"{name}:{block.line}"
        assert block.lang, f"{where}: a code block needs a language"
        assert block.lang != "sh", f"{where}: use ```bash (runnable) or ```shell (skipped)"
        if block.lang != "bash":
            assert curl_count(block.text) == 0, f"{where}: curl examples must be ```bash"
        if block.lang == "json":
            json.loads(block.text)
        if block.lang == "python":
            compile(block.text, where, "exec")


def runnable_docs() -> list[str]:
    """The documents with ```bash blocks: each is run against its own gateway."""
    return [name for name in DOCS if any(b.lang == "bash" for b in fenced_blocks(read_doc(name)))]


def test_the_examples_are_where_the_test_runs_them() -> None:
    """The quick start, the README and the endpoint reference carry the runnable examples; the
    guide and the Stripe page link to them (a new ```bash block anywhere in DOCS is run too)."""
    assert {"README.md", "CLIENT_AUTH_QUICK_START.md", "docs/ENDPOINTS.md"} <= set(runnable_docs())


@pytest.mark.slow
@pytest.mark.parametrize("name", runnable_docs())
def test_doc_bash_blocks_run_verbatim_against_a_real_gateway(
    name: str, gateway: str, tmp_path: Path
) -> None:
    blocks = fenced_blocks(read_doc(name))
    runnable = [(i, b) for i, b in enumerate(blocks) if b.lang == "bash"]
    runs = run_script([b.text for _, b in runnable], gateway, tmp_path)
    for (index, block), run in zip(runnable, runs, strict=True):
        where = f"{name}:{block.line}"
        assert DOC_HOST in block.text or curl_count(block.text) == 0, where
        assert len(run.calls) >= curl_count(block.text), f"{where}: a curl call went unrecorded"
        sample = sample_after(blocks, index)
        fails_on_error = block.text.count("--fail-with-body") == curl_count(block.text)
        if fails_on_error:
            for call in run.calls:
                assert call.status == success_status(call), f"{where}: {call}"
        else:
            # A deliberate error: one call, its sample shows the error body.
            assert len(run.calls) == 1, f"{where}: one call per error example"
            assert isinstance(sample, dict), f"{where}: an error example needs its sample"
            assert "code" in sample, f"{where}: an error example needs its sample"
            assert run.calls[0].status == ERROR_STATUS[sample["code"]], f"{where}: {run.calls}"
        if sample is not None:
            actual = parse_output(run.stdout, where)
            assert normalized(actual) == normalized(sample), (
                f"{where}: the sample differs from the real output:\n{json.dumps(actual, indent=4)}"
            )


# -- the delivery summary's examples ------------------------------------------------------------

#: The four curl examples of CLIENT_AUTH_DELIVERY_SUMMARY.md ("Usage Examples"), verbatim (the
#: summary is the original contract, delivered with the project, not kept in this repository).
SUMMARY_CREATE = """\
curl -X POST http://localhost:18789/api/admin/clients \\
  -H "X-Auth-Token: your-secret-admin-token" \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "Acme Corp",
    "email": "api@acmecorp.com",
    "plan": "pro"
  }'

# Response:
# {
#   "client_id": "uuid-here",
#   "api_key": "oc_live_abc123def456...",
#   "plan": "pro",
#   "credits_remaining": 200,
#   ...
# }"""
SUMMARY_USAGE = """\
curl -H "X-Client-Key: oc_live_abc123def456..." \\
  http://localhost:18789/api/billing/usage

# Response:
# {
#   "client_id": "uuid-here",
#   "plan": "pro",
#   "credits_remaining": 199,
#   "credits_limit": 200,
#   "usage_pct": 0.5,
#   "status": "active",
#   ...
# }"""
SUMMARY_JOB = """\
curl -X POST http://localhost:18789/api/intake \\
  -H "X-Client-Key: oc_live_abc123def456..." \\
  -H "Content-Type: application/json" \\
  -d '{
    "project_name": "Feature Build",
    "description": "Add user authentication",
    "task_type": "feature_build",
    "priority": "P1"
  }'

# Job created, credit deducted from client"""
SUMMARY_CREDITS = """\
curl -X PUT http://localhost:18789/api/admin/clients/uuid-here/credits \\
  -H "X-Auth-Token: your-secret-admin-token" \\
  -H "Content-Type: application/json" \\
  -d '{
    "credits": 50,
    "reason": "Q1 promotional credit"
  }'

# Client now has 50 additional jobs available"""
SUMMARY_EXAMPLES = (SUMMARY_CREATE, SUMMARY_USAGE, SUMMARY_JOB, SUMMARY_CREDITS)


def run_summary_example(
    example: str, host: str, tmp_path: Path, *, key: str = "", client_id: str = ""
) -> tuple[CurlCall, Any]:
    """One summary example with the real token, key and id put in; its call and output."""
    text = example.replace("your-secret-admin-token", ADMIN_TOKEN)
    if key:
        text = text.replace("oc_live_abc123def456...", key)
    if client_id:
        text = text.replace("uuid-here", client_id)
    (run,) = run_script([text], host, tmp_path)
    (call,) = run.calls
    return call, parse_output(run.stdout, example.splitlines()[0])


@pytest.mark.slow
def test_summary_examples_give_the_documented_results(gateway: str, tmp_path: Path) -> None:
    call, created = run_summary_example(SUMMARY_CREATE, gateway, tmp_path)
    assert call.status == 201
    assert _KEY_RE.fullmatch(created["api_key"])
    assert _UUID_RE.fullmatch(created["client_id"])
    assert (created["plan"], created["credits_remaining"]) == ("pro", 200)
    ids = {"key": created["api_key"], "client_id": created["client_id"]}

    call, usage = run_summary_example(SUMMARY_USAGE, gateway, tmp_path, **ids)
    assert call.status == 200
    assert usage["client_id"] == created["client_id"]
    assert (usage["plan"], usage["credits_remaining"], usage["credits_limit"]) == ("pro", 200, 200)
    assert (usage["usage_pct"], usage["status"]) == (0.0, "active")

    call, job = run_summary_example(SUMMARY_JOB, gateway, tmp_path, **ids)
    assert call.status == 201
    assert (job["status"], job["credits_remaining"]) == ("queued", 199)
    assert job["job"]["client_id"] == created["client_id"]

    # After one job, usage reads exactly as the summary's sample response.
    call, usage = run_summary_example(SUMMARY_USAGE, gateway, tmp_path, **ids)
    assert call.status == 200
    documented = {
        "client_id": created["client_id"],
        "plan": "pro",
        "credits_remaining": 199,
        "credits_limit": 200,
        "usage_pct": 0.5,
        "status": "active",
    }
    assert {k: usage[k] for k in documented} == documented

    call, client = run_summary_example(SUMMARY_CREDITS, gateway, tmp_path, **ids)
    assert call.status == 200
    assert client["client_id"] == created["client_id"]
    assert client["credits_remaining"] == 199 + 50


# -- the endpoint table -------------------------------------------------------------------------

#: How the endpoint table names each OpenAPI security scheme.
_AUTH = {"ClientKey": "`X-Client-Key`", "AdminToken": "`X-Auth-Token`"}
_ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \| ([^|]+) \| (\d{3}) \|")


def documented_endpoints() -> dict[tuple[str, str], tuple[str, int]]:
    """(method, path) -> (auth, success status) of docs/ENDPOINTS.md's endpoint table (from
    its heading up to the first line that is not a table row)."""
    text = read_doc("docs/ENDPOINTS.md")
    table = text[text.index("\n## The endpoint table\n") :]
    lines = table.splitlines()[1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("| Method and path"))
    rows: dict[tuple[str, str], tuple[str, int]] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        match = _ROW.match(line)
        assert match, f"not an endpoint row: {line}"
        method, path, auth, code = match.groups()
        assert (method, path) not in rows, f"listed twice: {method} {path}"
        rows[(method, path)] = (auth.strip(), int(code))
    return rows


def app_endpoints() -> dict[tuple[str, str], tuple[str, int]]:
    """The same, from the reference gateway's OpenAPI document."""
    import gateway as reference

    rows: dict[tuple[str, str], tuple[str, int]] = {}
    for path, operations in reference.create_app().openapi()["paths"].items():
        for method, operation in operations.items():
            schemes = [
                name for requirement in operation.get("security", []) for name in requirement
            ]
            auth = " ".join(_AUTH[name] for name in schemes) or "none"
            success = min(int(code) for code in operation["responses"] if code.startswith("2"))
            rows[(method.upper(), path)] = (auth, success)
    return rows


def test_the_endpoint_table_lists_every_route_with_its_auth_and_status(env: Path) -> None:
    documented, actual = documented_endpoints(), app_endpoints()
    assert sorted(set(actual) - set(documented)) == [], "routes missing from the table"
    assert sorted(set(documented) - set(actual)) == [], "documented routes the app lacks"
    for endpoint, (auth, status) in actual.items():
        doc_auth, doc_status = documented[endpoint]
        if auth == "none":  # public, or signed some other way (the Stripe webhook)
            assert "X-" not in doc_auth, endpoint
        else:
            assert doc_auth == auth, endpoint
        assert doc_status == status, endpoint


def _error_classes(base: type[BillingError]) -> list[type[BillingError]]:
    return [c for sub in base.__subclasses__() for c in (sub, *_error_classes(sub))]


def test_the_error_table_lists_every_error_code() -> None:
    """Every error the module raises (each concrete ``BillingError`` of the package, the ones
    only the HTTP layer defines included) has its row in INTEGRATION's section 8, so a new
    code cannot ship undocumented."""
    importlib.import_module("openclaw_billing.api.deps")  # defines CredentialsInQuery
    doc = (REPO_ROOT / "CLIENT_AUTH_INTEGRATION.md").read_text(encoding="utf-8")
    table = doc.split("## 8. Errors", 1)[1].split("\n## ", 1)[0]
    leaves = [
        c
        for c in _error_classes(BillingError)
        if not c.__subclasses__() and c.__module__.startswith("openclaw_billing.")
    ]  # the reference gateway's own codes are in its Idempotency-Key section
    missing = sorted({c.code for c in leaves if f"| `{c.code}` | {c.status_code} |" not in table})
    assert len(leaves) > 30
    assert not missing, f"codes with no row (or another status) in section 8: {missing}"


# -- the architecture, the layout and the links ---------------------------------------------------

ARCHITECTURE = "docs/ARCHITECTURE.md"
#: Files of the repository whose text may name other documents.
_TEXT_SUFFIXES = (".py", ".md")
#: Documents named in the repository that live outside it on purpose: the original contract,
#: whose examples tests/test_docs.py holds verbatim.
EXTERNAL_DOCS = {"CLIENT_AUTH_DELIVERY_SUMMARY.md"}
_DOC_NAME = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[A-Z][A-Z0-9_]*\.md)\b")
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_LAYOUT_ENTRY = re.compile(r"^( *)(\S+)")
_CITED_ID = re.compile(r"\b([RI]\d{1,2})\b")


def repo_files(*suffixes: str) -> list[Path]:
    """The repository's own files with these suffixes (no virtualenv, no hidden directories)."""
    return [
        path
        for path in sorted(REPO_ROOT.rglob("*"))
        if path.suffix in suffixes
        and path.is_file()
        and not any(
            part.startswith(".") or part in {"node_modules", "__pycache__"}
            for part in path.relative_to(REPO_ROOT).parts
        )
    ]


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` (a whole heading line), up to the next heading of its level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(f"\n{heading}\n") + len(heading) + 2
    rest = markdown[start:]
    end = re.search(rf"(?m)^{re.escape(level)} ", rest)
    return rest if end is None else rest[: end.start()]


def layout_entries(markdown: str) -> list[str]:
    """The paths of the ```text tree in the "## Layout" section: an entry is a line that starts
    left of the description column (where the first line's description starts), nested two
    spaces per level; a line starting at that column continues the description above. A
    package's ``__init__.py`` is its directory."""
    (tree,) = [b for b in fenced_blocks(section(markdown, "## Layout")) if b.lang == "text"][:1]
    lines = tree.text.splitlines()
    first = re.match(r"^\S+\s+", lines[0])
    assert first is not None, "the layout starts with an entry and its description"
    column = len(first.group(0))
    parents: list[str] = []
    entries: list[str] = []
    for line in lines:
        match = _LAYOUT_ENTRY.match(line)
        if match is None or len(match.group(1)) >= column:
            continue
        indent, name = match.groups()
        assert len(indent) % 2 == 0, f"odd indentation: {line!r}"
        depth = len(indent) // 2
        assert depth <= len(parents), f"nested under nothing: {line!r}"
        del parents[depth:]
        path = "".join(parents) + name
        entries.append(path.removesuffix("__init__.py") or path)
        if name.endswith("/"):
            parents.append(name)
    return entries


def package_modules() -> set[str]:
    """Every module of ``openclaw_billing/`` as a repository path; a package as its directory."""
    package = REPO_ROOT / "openclaw_billing"
    return {
        p.relative_to(REPO_ROOT).as_posix().removesuffix("__init__.py")
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_the_architecture_names_every_module_and_only_existing_ones() -> None:
    entries = layout_entries(read_doc(ARCHITECTURE))
    assert sorted(package_modules() - set(entries)) == [], "modules missing from the layout"
    assert [e for e in entries if not (REPO_ROOT / e).exists()] == [], "listed, not in the tree"


def test_every_requirement_and_invariant_the_tests_cite_is_defined() -> None:
    """The R and I ids the tests and docs cite (anywhere in them: an id is a requirement of the
    architecture page whether or not the line names the page) are rows of its tables."""
    doc = read_doc(ARCHITECTURE)
    defined = {
        row.split("|")[1].strip()
        for name in ("## Reliability requirements", "## Invariants")
        for row in section(doc, name).splitlines()
        if row.startswith("| ")
    }
    cited: dict[str, str] = {}
    for path in repo_files(*_TEXT_SUFFIXES):
        if path == REPO_ROOT / ARCHITECTURE:
            continue
        for ident in _CITED_ID.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(ident, path.relative_to(REPO_ROOT).as_posix())
    assert len(cited) > 20
    assert {k: v for k, v in cited.items() if k not in defined} == {}, "cited, never defined"


def test_the_readme_layout_matches_the_tree() -> None:
    """Every path the README's layout lists exists, and every module of the package is listed."""
    entries = layout_entries(read_doc("README.md"))
    assert sorted(package_modules() - set(entries)) == [], "modules missing from the layout"
    assert [e for e in entries if not (REPO_ROOT / e).exists()] == [], "listed, not in the tree"


def test_every_document_the_repository_names_is_in_it() -> None:
    """A name like ``SECURITY.md`` or ``docs/ARCHITECTURE.md`` in any source or document
    resolves inside the repository: next to the file that names it, at the root, or in docs/."""
    missing: list[str] = []
    for path in repo_files(*_TEXT_SUFFIXES):
        for name in set(_DOC_NAME.findall(path.read_text(encoding="utf-8"))):
            if name in EXTERNAL_DOCS:
                continue
            places = (path.parent / name, REPO_ROOT / name, REPO_ROOT / "docs" / name)
            if not any(place.is_file() for place in places):
                missing.append(f"{path.relative_to(REPO_ROOT)}: {name}")
    assert missing == []


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text (code blocks skipped)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6} (.+)$", line)
        if in_code or match is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_every_relative_link_and_anchor_resolves() -> None:
    """Every relative Markdown link goes to a file of the repository, and its ``#anchor`` to a
    heading of that file, so moving a section cannot leave a link behind."""
    broken: list[str] = []
    for path in repo_files(".md"):
        text = path.read_text(encoding="utf-8")
        for target in _LINK.findall(text):
            if re.match(r"^[a-z][a-z+.-]*:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO_ROOT)}: ({target})"
            if not linked.exists() or (
                anchor
                and linked.suffix == ".md"
                and anchor not in heading_anchors(linked.read_text(encoding="utf-8"))
            ):
                broken.append(where)
    assert broken == []


# -- the Stripe events ----------------------------------------------------------------------------

_EVENT_ROW = re.compile(r"^\| (`[a-z_.]+`(?:, `[a-z_.]+`)*) \|", re.MULTILINE)
_ENABLED_EVENT = re.compile(r'enabled_events\[\]=([a-z_.]+)"')


def test_stripe_md_lists_exactly_the_handled_event_types() -> None:
    """The table of what each event does, and the command that creates the endpoint, name
    exactly the types the webhook has a handler for (HANDLED_EVENTS, collected from the
    handlers), so a new handler without its line in the docs fails here."""
    text = read_doc("docs/STRIPE.md")
    table = text[text.index("## What each event does") :]
    rows = {e.strip("`") for row in _EVENT_ROW.findall(table) for e in row.split(", ")}
    assert rows == set(HANDLED_EVENTS)
    assert set(_ENABLED_EVENT.findall(text)) == set(HANDLED_EVENTS)
