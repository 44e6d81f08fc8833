"""Aliyun SMS: the signed SendSms request (checked by an implementation of Aliyun's documented
algorithm written here, and by Aliyun's own published example), the error codes, number
formats, and SmsReport receipts behind a shared token."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import string
from urllib.parse import parse_qsl

import pytest
from pytest_httpserver import HTTPServer

from service.delivery.accounts import find_account
from service.delivery.providers import (
    Account,
    Inbound,
    Outgoing,
    ProviderConfigError,
    ProviderError,
    WebhookReceiver,
    WebhookRejected,
    build_adapter,
)
from service.kit.settings import Settings
from workers.providers.sms.aliyun import AliyunSms, aliyun_number, signature, string_to_sign

KEY_ID = "testId"
SECRET = "testSecret"
SIGN_NAME = "阿里云短信测试专用"
NONCE = "45e25e9b-0a6f-4070-8c85-2956eda1b466"
WHEN = dt.datetime(2017, 7, 12, 2, 42, 19, tzinfo=dt.UTC)
TOKEN = "receipt-token-4f1c"
WEBHOOK_URL = f"https://lifeline.example/v1/webhooks/aliyun-sms?token={TOKEN}"
MESSAGE = Outgoing(123, "sms", "+8615300000001", {"body": "test"})


# --- Aliyun's signature, written here from its documentation ----------------------------------

UNRESERVED = set(string.ascii_letters + string.digits + "-_.~")


def encode(text: str) -> str:
    return "".join(
        chr(byte) if chr(byte) in UNRESERVED else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def expected_string_to_sign(method: str, params: dict[str, str]) -> str:
    query = "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))
    return method + "&" + encode("/") + "&" + encode(query)


def expected_signature(secret: str, text: str) -> str:
    mac = hmac.new((secret + "&").encode(), text.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# Aliyun's published SendSms signing example (GET, Format=XML): its parameters and answer.
DOCUMENTED = {
    "AccessKeyId": KEY_ID,
    "Action": "SendSms",
    "Format": "XML",
    "OutId": "123",
    "PhoneNumbers": "15300000001",
    "RegionId": "cn-hangzhou",
    "SignName": SIGN_NAME,
    "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": NONCE,
    "SignatureVersion": "1.0",
    "TemplateCode": "SMS_71390007",
    "TemplateParam": '{"customer":"test"}',
    "Timestamp": "2017-07-12T02:42:19Z",
    "Version": "2017-05-25",
}
DOCUMENTED_SIGNATURE = "zJDF+Lrzhj/ThnlvIToysFRq6t4="


def test_signing_reproduces_aliyuns_documented_example() -> None:
    text = string_to_sign("GET", DOCUMENTED)
    assert text.startswith(
        "GET&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DXML%26OutId%3D123"
    )
    assert "%26SignName%3D%25E9%2598%25BF%25E9%2587%258C" in text
    assert "%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D" in text
    assert text.endswith("%26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25")
    assert signature(SECRET, text) == DOCUMENTED_SIGNATURE
    # ... and so does this file's own implementation, which the next tests rely on.
    assert expected_string_to_sign("GET", DOCUMENTED) == text
    assert expected_signature(SECRET, text) == DOCUMENTED_SIGNATURE


def test_percent_encoding_follows_aliyuns_rules() -> None:
    params = {"a": "x y*z~/+é"}
    assert string_to_sign("POST", params) == "POST&%2F&a%3Dx%2520y%252Az~%252F%252B%25C3%25A9"


# --- Sending ------------------------------------------------------------------------------------


def adapter(httpserver: HTTPServer, **options: str) -> AliyunSms:
    account = Account(
        "aliyun-sms",
        "aliyun-sms",
        {
            "access_key_id": KEY_ID,
            "access_key_secret": SECRET,
            "sign_name": SIGN_NAME,
            "template_code": "SMS_71390007",
            "webhook_token": TOKEN,
            "base_url": httpserver.url_for("/"),
            **options,
        },
    )
    built = build_adapter(account, Settings())
    assert isinstance(built, AliyunSms)
    return built


def answer(httpserver: HTTPServer, body: dict[str, str], status: int = 200) -> None:
    httpserver.expect_request("/", method="POST").respond_with_json(body, status=status)


def test_sends_a_signed_sendsms_request_with_a_fixed_clock_and_nonce(
    httpserver: HTTPServer,
) -> None:
    answer(httpserver, {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0"})
    provider = adapter(httpserver, template_param="customer")
    provider.clock = lambda: WHEN
    provider.nonce = lambda: NONCE

    sent = provider.send(MESSAGE)

    assert sent.provider_message_id == "900619746936498440^0"
    assert (provider.channel, provider.idempotent) == ("sms", False)
    request, _ = httpserver.log[0]
    assert request.content_type == "application/x-www-form-urlencoded"
    form = dict(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
    given = form.pop("Signature")
    # Aliyun's example, but answered in JSON and without the optional RegionId.
    assert form == {k: v for k, v in DOCUMENTED.items() if k != "RegionId"} | {"Format": "JSON"}
    text = expected_string_to_sign("POST", form)
    assert text == (
        "POST&%2F&AccessKeyId%3DtestId%26Action%3DSendSms%26Format%3DJSON%26OutId%3D123"
        "%26PhoneNumbers%3D15300000001"
        "%26SignName%3D%25E9%2598%25BF%25E9%2587%258C%25E4%25BA%2591%25E7%259F%25AD%25E4%25BF"
        "%25A1%25E6%25B5%258B%25E8%25AF%2595%25E4%25B8%2593%25E7%2594%25A8"
        "%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D45e25e9b-0a6f-4070-8c85-2956eda1b466"
        "%26SignatureVersion%3D1.0%26TemplateCode%3DSMS_71390007"
        "%26TemplateParam%3D%257B%2522customer%2522%253A%2522test%2522%257D"
        "%26Timestamp%3D2017-07-12T02%253A42%253A19Z%26Version%3D2017-05-25"
    )
    assert given == expected_signature(SECRET, text) == "w9pwyiji15AaNVWAT7kbQm4FrYc="


def test_a_real_send_signs_a_fresh_nonce_and_the_current_time(httpserver: HTTPServer) -> None:
    answer(httpserver, {"Code": "OK", "BizId": "1"})
    answer(httpserver, {"Code": "OK", "BizId": "2"})
    provider = adapter(httpserver)
    body = "Hi Ada, your code is 1234 ✓ (valid 5 min)"
    provider.send(Outgoing(7, "sms", "+447700900123", {"body": body}))
    provider.send(Outgoing(8, "sms", "+447700900123", {"body": body}))

    forms = [dict(parse_qsl(r.get_data(as_text=True))) for r, _ in httpserver.log]
    for form in forms:
        given = form.pop("Signature")
        assert given == expected_signature(SECRET, expected_string_to_sign("POST", form))
        assert form["PhoneNumbers"] == "447700900123"
        assert json.loads(form["TemplateParam"]) == {"content": body}
        stamp = dt.datetime.strptime(form["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(stamp.replace(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert forms[0]["SignatureNonce"] != forms[1]["SignatureNonce"]
    assert [form["OutId"] for form in forms] == ["7", "8"]


@pytest.mark.parametrize(
    ("e164", "aliyun"),
    [
        ("+8613800000000", "13800000000"),
        ("+447700900123", "447700900123"),
        ("+85291234567", "85291234567"),
        ("13800000000", "13800000000"),
    ],
)
def test_numbers_take_aliyuns_form(e164: str, aliyun: str) -> None:
    assert aliyun_number(e164) == aliyun


def failure(provider: AliyunSms) -> ProviderError:
    with pytest.raises(ProviderError) as raised:
        provider.send(MESSAGE)
    return raised.value


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("isv.BUSINESS_LIMIT_CONTROL", 200, "retryable"),
        ("Throttling.User", 400, "retryable"),
        ("isp.SYSTEM_ERROR", 200, "retryable"),
        ("isv.MOBILE_NUMBER_ILLEGAL", 200, "permanent"),
        ("isv.BLACK_KEY_CONTROL_LIMIT", 200, "permanent"),
        ("isv.SMS_TEMPLATE_ILLEGAL", 200, "permanent"),
        ("SignatureDoesNotMatch", 400, "permanent"),
    ],
)
def test_aliyun_codes_are_classified_with_aliyuns_message(
    httpserver: HTTPServer, code: str, status: int, kind: str
) -> None:
    answer(httpserver, {"Code": code, "Message": f"message for {code}"}, status)
    error = failure(adapter(httpserver))
    assert error.kind == kind
    assert f"Aliyun {code}: message for {code}" in error.reason


def test_the_frequency_limit_waits_a_minute(httpserver: HTTPServer) -> None:
    answer(httpserver, {"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"})
    assert failure(adapter(httpserver)).retry_after == 60.0


def test_a_server_error_is_retryable(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/", method="POST").respond_with_data("bad gateway", status=502)
    error = failure(adapter(httpserver))
    assert error.kind == "retryable"
    assert "HTTP 502" in error.reason


def test_missing_options_name_the_environment_variables_to_set() -> None:
    settings = Settings()
    environ = {
        "LIFELINE_ALIYUN_SMS_ACCESS_KEY_ID": KEY_ID,
        "LIFELINE_ALIYUN_SMS_ACCESS_KEY_SECRET": SECRET,
        "LIFELINE_ALIYUN_SMS_SIGN_NAME": SIGN_NAME,
    }
    with pytest.raises(ProviderConfigError, match="LIFELINE_ALIYUN_SMS_TEMPLATE_CODE") as raised:
        build_adapter(find_account("aliyun-sms", settings, environ), settings)
    assert SECRET not in str(raised.value)
    environ["LIFELINE_ALIYUN_SMS_TEMPLATE_CODE"] = "SMS_71390007"
    provider = build_adapter(find_account("aliyun-sms", settings, environ), settings)
    with pytest.raises(WebhookRejected, match="LIFELINE_ALIYUN_SMS_WEBHOOK_TOKEN"):
        provider.verify_webhook(receipt())


# --- Receipts -----------------------------------------------------------------------------------

RECEIPTS = [
    {
        "phone_number": "15300000001",
        "send_time": "2017-07-12 10:42:20",
        "report_time": "2017-07-12 10:42:25",
        "success": True,
        "err_code": "DELIVERED",
        "err_msg": "用户接收成功",
        "sms_size": "1",
        "biz_id": "900619746936498440^0",
        "out_id": "123",
    },
    {
        "phone_number": "447700900123",
        "send_time": "2017-07-12 10:42:20",
        "report_time": "2017-07-12 10:43:01",
        "success": False,
        "err_code": "MK:0001",
        "err_msg": "号码无效",
        "sms_size": "1",
        "biz_id": "900619746936498441^0",
        "out_id": "124",
    },
]


def receipt(url: str = WEBHOOK_URL, items: object = RECEIPTS) -> Inbound:
    body = json.dumps(items, ensure_ascii=False).encode()
    return Inbound(url=url, headers={"content-type": "application/json"}, body=body)


def test_accepts_receipts_only_with_the_configured_token(httpserver: HTTPServer) -> None:
    provider = adapter(httpserver)
    assert isinstance(provider, WebhookReceiver)
    provider.verify_webhook(receipt())
    for url in (
        WEBHOOK_URL.replace(TOKEN, TOKEN[:-1] + "x"),
        WEBHOOK_URL.split("?")[0],
        WEBHOOK_URL + "x",
    ):
        with pytest.raises(WebhookRejected):
            provider.verify_webhook(receipt(url))


def test_without_a_webhook_token_every_receipt_is_refused(httpserver: HTTPServer) -> None:
    provider = adapter(httpserver, webhook_token="")
    with pytest.raises(WebhookRejected, match="webhook_token"):
        provider.verify_webhook(receipt())
    with pytest.raises(WebhookRejected):
        provider.verify_webhook(receipt(WEBHOOK_URL.split("?")[0] + "?token="))


def test_receipts_become_reports_and_get_the_answer_aliyun_expects(
    httpserver: HTTPServer,
) -> None:
    result = adapter(httpserver).parse_webhook(receipt())

    assert json.loads(result.response_body) == {"code": 0, "msg": "接收成功"}
    assert result.response_type == "application/json"
    delivered, failed = result.reports
    assert (delivered.status, delivered.message_id, delivered.provider_message_id) == (
        "delivered",
        123,
        "900619746936498440^0",
    )
    assert delivered.event_id == "900619746936498440^0:15300000001:2017-07-12 10:42:25"
    assert delivered.at == dt.datetime(2017, 7, 12, 2, 42, 25, tzinfo=dt.UTC)
    assert delivered.detail is None
    assert (failed.status, failed.message_id, failed.detail) == ("failed", 124, "MK:0001: 号码无效")


@pytest.mark.parametrize("items", [{"not": "a list"}, [{"success": True}], [7]])
def test_a_body_that_is_not_an_smsreport_array_is_unreadable(
    httpserver: HTTPServer, items: object
) -> None:
    with pytest.raises(ValueError):
        adapter(httpserver).parse_webhook(receipt(items=items))
