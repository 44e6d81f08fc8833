"""Firebase Cloud Messaging, HTTP v1 API: push to Android, iOS and web apps through Google.

Options (an account named `fcm` reads them from LIFELINE_FCM_<OPTION>):
- `service_account_file` (LIFELINE_FCM_SERVICE_ACCOUNT_FILE): path to the service account's
  JSON key, or `service_account_json` (LIFELINE_FCM_SERVICE_ACCOUNT_JSON): the key itself.
- `project_id` (LIFELINE_FCM_PROJECT_ID): the Firebase project; default: the key's.
- `token_uri` (LIFELINE_FCM_TOKEN_URI): the OAuth token endpoint; default: the key's.
- `base_url` (LIFELINE_FCM_BASE_URL): default https://fcm.googleapis.com; `timeout`.

Each send carries an OAuth access token, got by signing a JWT with the key (RS256) and trading
it at the token endpoint; the token is kept until five minutes before it expires.

Errors: UNREGISTERED (404) and INVALID_ARGUMENT about the registration token are address_gone
(the app was uninstalled or the token is not one); QUOTA_EXCEEDED (429), UNAVAILABLE (503),
INTERNAL (500) and timeouts are retryable, honouring Retry-After; a 401 for an expired access
token drops the cached token and is retryable; SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR,
other INVALID_ARGUMENT and a key the token endpoint refuses are permanent.

No webhook: FCM reports gone tokens in the answer to the next send.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt

from service.delivery.providers import Account, Outgoing, ProviderConfigError, ProviderError, Sent
from service.kit.settings import Settings
from workers.providers.common import inline_or_file
from workers.providers.http import base_url, call, client_for, excerpt, fail, json_body

DEFAULT_BASE_URL = "https://fcm.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600  # the longest Google accepts
REFRESH_MARGIN = 300.0  # renew this long before expiry: no send goes out on a dying token
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class Fcm:
    # FCM takes no idempotency key: a send repeated after an unknown outcome may arrive twice.
    idempotent = False
    channel = "push"

    def __init__(
        self,
        name: str,
        key: dict[str, Any],
        *,
        project_id: str,
        token_uri: str,
        base: str = DEFAULT_BASE_URL,
        client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.name = name
        self.client_email = str(key["client_email"])
        self.private_key = str(key["private_key"])
        self.key_id = key.get("private_key_id")
        self.token_uri = token_uri
        self.url = f"{base.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.client = client or httpx.Client(timeout=10.0)
        self.clock = clock
        # Dramatiq runs several threads per process: one of them fetches the token, the rest
        # wait for it instead of each trading their own.
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def send(self, message: Outgoing) -> Sent:
        token = self.access_token()
        response = call(
            self.client,
            "POST",
            self.url,
            json=self.payload(message),
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.is_success:
            body = json_body(response)
            found = body.get("name") if isinstance(body, dict) else None
            return Sent(provider_message_id=str(found) if found else None)
        raise self.error(response, token)

    @staticmethod
    def payload(message: Outgoing) -> dict[str, Any]:
        # FCM data values must be strings; the app reads deep_link and our id from there.
        data = {
            key.removeprefix("data."): value
            for key, value in message.content.items()
            if key.startswith("data.")
        }
        if message.content.get("deep_link"):
            data["deep_link"] = message.content["deep_link"]
        data["lifeline_message_id"] = str(message.message_id)
        return {
            "message": {
                "token": message.to,
                "notification": {
                    "title": message.content.get("title", ""),
                    "body": message.content.get("body", ""),
                },
                "data": data,
            }
        }

    def access_token(self) -> str:
        with self._lock:
            if self._token is None or self.clock() >= self._expires_at - REFRESH_MARGIN:
                self._token, self._expires_at = self._exchange()
            return self._token

    def _exchange(self) -> tuple[str, float]:
        now = int(self.clock())
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        headers = {"kid": self.key_id} if self.key_id else None
        try:
            assertion = jwt.encode(claims, self.private_key, algorithm="RS256", headers=headers)
        except (ValueError, TypeError) as exc:
            raise ProviderError(
                "permanent", "the service account's private_key is not an RSA key"
            ) from exc
        response = call(
            self.client,
            "POST",
            self.token_uri,
            data={"grant_type": JWT_BEARER, "assertion": assertion},
        )
        body = json_body(response)
        if not response.is_success:
            # invalid_grant / invalid_client: a revoked or wrong key, not fixed by retrying.
            described = (
                f"{body.get('error')}: {body.get('error_description', '')}"
                if isinstance(body, dict)
                else excerpt(response)
            )
            raise fail(response, f"OAuth token exchange refused: {described}")
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise ProviderError("retryable", "OAuth token answer without an access_token")
        lifetime = float(body.get("expires_in", ASSERTION_LIFETIME))
        return body["access_token"], now + lifetime

    def forget_token(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def error(self, response: httpx.Response, token: str) -> ProviderError:
        body = json_body(response)
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return fail(response)
        status = str(error.get("status", ""))
        text = str(error.get("message", ""))
        code = _fcm_error_code(error) or status
        reason = f"{code}: {text}" if text else code
        if code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and _names_the_token(error, text)):
            return ProviderError("address_gone", f"HTTP {response.status_code}: {reason}")
        if response.status_code == 401 and code != "THIRD_PARTY_AUTH_ERROR":
            # The access token expired or was revoked early: the next attempt trades a new one.
            self.forget_token(token)
            return ProviderError("retryable", f"HTTP 401: {reason}")
        return fail(response, reason)


def _fcm_error_code(error: dict[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and detail.get("@type") == FCM_ERROR_TYPE:
            code = detail.get("errorCode")
            return str(code) if code else None
    return None


def _names_the_token(error: dict[str, Any], text: str) -> bool:
    """Whether an INVALID_ARGUMENT is about the registration token rather than the message
    (a bad data key, a payload too big): FCM says so in its message or a field violation."""
    if "registration token" in text.lower():
        return True
    for detail in error.get("details") or ():
        for violation in (detail.get("fieldViolations") or ()) if isinstance(detail, dict) else ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


def _service_account(account: Account) -> dict[str, Any]:
    text, where = inline_or_file(
        account, "service_account_json", "service_account_file", "a service account key"
    )
    try:
        key = json.loads(text)
    except ValueError:
        raise ProviderConfigError(
            f"provider account {account.name!r}: {where} is not JSON"
        ) from None  # the parser's error may quote the key
    if not isinstance(key, dict) or not all(key.get(f) for f in ("client_email", "private_key")):
        raise ProviderConfigError(
            f"provider account {account.name!r}: {where} is not a service account key "
            "(it needs client_email and private_key)"
        )
    return key


def fcm(account: Account, settings: Settings) -> Fcm:
    key = _service_account(account)
    project_id = account.get("project_id") or key.get("project_id") or account.require("project_id")
    token_uri = account.get("token_uri") or key.get("token_uri") or account.require("token_uri")
    return Fcm(
        account.name,
        key,
        project_id=str(project_id),
        token_uri=str(token_uri),
        base=base_url(account, DEFAULT_BASE_URL),
        client=client_for(account),
    )
