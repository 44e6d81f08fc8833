"""Aliyun (Alibaba Cloud) Short Message Service: SendSms on the dysmsapi RPC API (version
2017-05-25), with delivery receipts (SmsReport) pushed over HTTP.

Aliyun sends only templates it has approved, under an approved signature, so the rendered SMS
body goes into one parameter of the template: the template's text should be just `${content}`.

Options (an account named `aliyun-sms` reads them from LIFELINE_ALIYUN_SMS_<OPTION>):
- `access_key_id` (LIFELINE_ALIYUN_SMS_ACCESS_KEY_ID) and `access_key_secret`
  (LIFELINE_ALIYUN_SMS_ACCESS_KEY_SECRET): the AccessKey pair requests are signed with.
- `sign_name` (LIFELINE_ALIYUN_SMS_SIGN_NAME) and `template_code`
  (LIFELINE_ALIYUN_SMS_TEMPLATE_CODE): the approved signature and template.
- `template_param` (LIFELINE_ALIYUN_SMS_TEMPLATE_PARAM): the template variable that receives
  the body; default `content`.
- `webhook_token` (LIFELINE_ALIYUN_SMS_WEBHOOK_TOKEN): the secret in the receipt URL.
- `base_url` (LIFELINE_ALIYUN_SMS_BASE_URL): default https://dysmsapi.aliyuncs.com; `timeout`.

Requests are POSTed form-encoded and signed as Aliyun's RPC APIs document (signature version
1.0): Signature = base64(HMAC-SHA1(secret + "&", "POST&%2F&" + percentEncode(the sorted,
percent-encoded parameters))). OutId is our message id, which Aliyun echoes in receipts.

Numbers: Aliyun takes mainland China numbers bare (+8613800000000 -> 13800000000) and others
as country code and number without "+" (+447700900123 -> 447700900123).

Errors: Code OK is sent, with BizId as the provider's id. isv.BUSINESS_LIMIT_CONTROL (the
per-number frequency limit, retried after a minute), Throttling*, isp.SYSTEM_ERROR, HTTP 5xx
and timeouts are retryable; isv.MOBILE_NUMBER_ILLEGAL, isv.BLACK_KEY_CONTROL_LIMIT and every
other code are permanent, with Aliyun's code and message.

Receipts: Aliyun POSTs a JSON array of SmsReport items to the receiving address set in its
console, and signs nothing. So the address carries a shared secret,
{LIFELINE_PUBLIC_URL}/v1/webhooks/{account}?token={webhook_token}, compared in constant time;
without `webhook_token` every receipt is refused, never accepted unchecked. The token travels
in the URL's query, so access logs of proxies and load balancers in front of Lifeline may record
it: keep query strings of that path out of those logs, or rotate the token (in the console and
here together) if they were kept. success true is delivered, false is failed with err_code
and err_msg. Aliyun wants {"code": 0, ...} back.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderError,
    Report,
    Sent,
    WebhookRejected,
    WebhookResult,
)
from service.kit.settings import Settings
from workers.providers.common import setting
from workers.providers.http import base_url, call, client_for, fail, json_body, retry_after

DEFAULT_BASE_URL = "https://dysmsapi.aliyuncs.com"
API_VERSION = "2017-05-25"
MAINLAND = "+86"
# Aliyun's per-number frequency limit counts per minute, hour and day: a minute is the shortest.
FREQUENCY_LIMIT = "isv.BUSINESS_LIMIT_CONTROL"
FREQUENCY_RETRY_AFTER = 60.0
RETRYABLE_CODES = {FREQUENCY_LIMIT, "isp.SYSTEM_ERROR", "ServiceUnavailable", "InternalError"}
# Receipt times are Beijing time, which keeps no daylight saving.
BEIJING = dt.timezone(dt.timedelta(hours=8))
RECEIVED = json.dumps({"code": 0, "msg": "接收成功"}, ensure_ascii=False)


def percent_encode(value: str) -> str:
    """RFC 3986 over UTF-8 as Aliyun signs it: only A-Z a-z 0-9 - _ . ~ stay as they are;
    a space is %20, never +."""
    return quote(value, safe="~")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(
        f"{percent_encode(key)}={percent_encode(value)}" for key, value in sorted(params.items())
    )


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def signature(access_key_secret: str, text: str) -> str:
    key = f"{access_key_secret}&".encode()
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha1).digest()).decode()


def aliyun_number(e164: str) -> str:
    if e164.startswith(MAINLAND):
        return e164[len(MAINLAND) :]
    return e164.removeprefix("+")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _nonce() -> str:
    return str(uuid.uuid4())


class AliyunSms:
    # SendSms takes no idempotency key (SignatureNonce only stops replays of one signed
    # request): a send repeated after an unknown outcome may reach the person twice.
    idempotent = False
    channel = "sms"

    def __init__(
        self,
        name: str,
        access_key_id: str,
        access_key_secret: str,
        *,
        sign_name: str,
        template_code: str,
        template_param: str = "content",
        webhook_token: str | None = None,
        receipts_setting: str = "option 'webhook_token'",  # where to set the token
        base: str = DEFAULT_BASE_URL,
        client: httpx.Client | None = None,
        clock: Callable[[], dt.datetime] = _now,
        nonce: Callable[[], str] = _nonce,
    ):
        self.name = name
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_name = sign_name
        self.template_code = template_code
        self.template_param = template_param
        self.webhook_token = webhook_token
        self.receipts_setting = receipts_setting
        self.url = f"{base.rstrip('/')}/"
        self.client = client or httpx.Client(timeout=10.0)
        self.clock = clock
        self.nonce = nonce

    def send(self, message: Outgoing) -> Sent:
        params = {
            "AccessKeyId": self.access_key_id,
            "Action": "SendSms",
            "Format": "JSON",
            "OutId": str(message.message_id),
            "PhoneNumbers": aliyun_number(message.to),
            "SignName": self.sign_name,
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self.nonce(),
            "SignatureVersion": "1.0",
            "TemplateCode": self.template_code,
            "TemplateParam": json.dumps(
                {self.template_param: message.content["body"]},
                ensure_ascii=False,
                separators=(",", ":"),
            ),
            "Timestamp": self.clock().astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": API_VERSION,
        }
        signed = signature(self.access_key_secret, string_to_sign("POST", params))
        body = f"{canonical_query(params)}&Signature={percent_encode(signed)}"
        response = call(
            self.client,
            "POST",
            self.url,
            content=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        answer = json_body(response)
        if response.is_success and isinstance(answer, dict) and answer.get("Code") == "OK":
            biz_id = answer.get("BizId")
            return Sent(provider_message_id=str(biz_id) if biz_id else None)
        raise _error(response, answer)

    def verify_webhook(self, request: Inbound) -> None:
        if self.webhook_token is None:
            raise WebhookRejected(
                f"account {self.name!r} takes no receipts until {self.receipts_setting} is "
                "set: Aliyun signs none, so the token in the URL is their only proof"
            )
        given = parse_qs(urlsplit(request.url).query).get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), self.webhook_token.encode()):
            raise WebhookRejected("the token in the receipt URL is missing or wrong")

    def parse_webhook(self, request: Inbound) -> WebhookResult:
        items = request.json()
        if not isinstance(items, list):
            raise ValueError("an Aliyun SmsReport push is a JSON array")
        return WebhookResult(
            reports=[_report(item) for item in items],
            response_body=RECEIVED,
            response_type="application/json",
        )


def _report(item: Any) -> Report:
    if not isinstance(item, dict) or not item.get("biz_id") or not item.get("phone_number"):
        raise ValueError("an SmsReport item needs biz_id and phone_number")
    reported = str(item.get("report_time") or "")
    try:
        at = dt.datetime.strptime(reported, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
    except ValueError as exc:
        raise ValueError(f"SmsReport report_time {reported!r} is not yyyy-MM-dd HH:mm:ss") from exc
    delivered = item.get("success") in (True, "true")
    out_id = str(item.get("out_id") or "")
    return Report(
        # One BizId covers every number of a request; a number's receipt comes once, at its
        # report time.
        event_id=f"{item['biz_id']}:{item['phone_number']}:{reported}",
        status="delivered" if delivered else "failed",
        at=at.astimezone(dt.UTC),
        message_id=int(out_id) if out_id.isdigit() else None,
        provider_message_id=str(item["biz_id"]),
        detail=None if delivered else f"{item.get('err_code')}: {item.get('err_msg')}",
    )


def _error(response: httpx.Response, answer: Any) -> ProviderError:
    code = answer.get("Code") if isinstance(answer, dict) else None
    if not code:
        return fail(response)
    reason = f"Aliyun {code}: {answer.get('Message', '')}"
    if code == FREQUENCY_LIMIT:
        return ProviderError("retryable", reason, FREQUENCY_RETRY_AFTER)
    if code in RETRYABLE_CODES or str(code).startswith("Throttling"):
        return ProviderError("retryable", reason, retry_after(response))
    if response.status_code in (408, 429) or response.status_code >= 500:
        return fail(response, reason)
    return ProviderError("permanent", reason)


def aliyun_sms(account: Account, settings: Settings) -> AliyunSms:
    return AliyunSms(
        account.name,
        account.require("access_key_id"),
        account.require("access_key_secret"),
        sign_name=account.require("sign_name"),
        template_code=account.require("template_code"),
        template_param=account.get("template_param", "content") or "content",
        webhook_token=account.get("webhook_token"),
        receipts_setting=setting(account, "webhook_token"),
        base=base_url(account, DEFAULT_BASE_URL),
        client=client_for(account),
    )
