"""Schemathesis hooks for `cargo xtask contract`: sign in as the role under test.

The run may revoke its own credentials (it calls logout, logout-all and session deletion with
generated data), so the token is fetched again after any 401 (`retry_on=[401]`; the summary
reports how often it re-authenticated). As an
administrator it learns account ids from list answers and could suspend or delete its own
account once it has made another administrator (legitimately: the last-admin rule only keeps
one active); generated requests never target the signed-in account itself: not in paths, and
not by its email in bodies (schemathesis reuses values it saw in answers, such as the email of
`/auth/me`, and a few generated sign-ins with it and a wrong password would rightly trip the
account's login backoff and lock the run out).
"""

import json
import os
import time
import urllib.error
import urllib.request

import schemathesis

BASE = os.environ["KEEL_CONTRACT_BASE"]
ROLE = os.environ["KEEL_CONTRACT_ROLE"]
EMAIL = os.environ["KEEL_CONTRACT_EMAIL"]
PASSWORD = os.environ["KEEL_CONTRACT_PASSWORD"]


def _post(path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else {}
    except urllib.error.HTTPError as error:
        return error.code, {"error": error.read().decode(errors="replace")}


def _sign_in() -> tuple[int, dict]:
    """Signs in, waiting out a short login backoff (429) a few times."""
    for _ in range(5):
        status, body = _post("/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD})
        if status != 429:
            break
        time.sleep(2)
    return status, body


def _login() -> str:
    status, body = _sign_in()
    if status == 401 and ROLE == "member":
        # First use: a member signs up like any client (active at once unless verification
        # is required).
        _post(
            "/api/v1/auth/register",
            {"email": EMAIL, "password": PASSWORD, "full_name": "Contract Member"},
        )
        status, body = _sign_in()
    if status != 200:
        raise RuntimeError(f"signing in as the {ROLE} failed with {status}: {body}")
    return body["access_token"]


@schemathesis.auth(refresh_interval=600, retry_on=[401])
class KeelSession:
    """A bearer token for the role under test."""

    def get(self, case, context):
        return _login()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        # Operations with an API-key-only alternative still accept the bearer token.
        case.headers.pop("X-API-Key", None)
        case.headers["Authorization"] = f"Bearer {data}"


def _own_id() -> str:
    token = _login()
    request = urllib.request.Request(
        BASE + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["id"]


OWN_ID = _own_id()


@schemathesis.hook
def filter_path_parameters(context, path_parameters):
    """Keeps the signed-in account out of generated paths (`/users/{id}` and below)."""
    return not path_parameters or OWN_ID not in path_parameters.values()


def _names_own_email(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == EMAIL
    if isinstance(value, dict):
        return any(_names_own_email(v) for v in value.values())
    if isinstance(value, list):
        return any(_names_own_email(v) for v in value)
    return False


@schemathesis.hook
def filter_body(context, body):
    """Keeps the signed-in account's email out of generated bodies (sign-in guesses)."""
    return not _names_own_email(body)
