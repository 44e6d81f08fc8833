"""The small HTML pages people reach from the links in messages.

Every value is escaped; there is no script at all, and forms post back to the page's own URL.
A GET never changes anything: link scanners and mail previews fetch URLs too.
"""

from __future__ import annotations

from html import escape

from service.delivery.consent import ALL_TOPICS, CHANNELS, TOPICS
from service.delivery.preferences import Preferences, Unsubscribed

CHANNEL_NAMES = {"email": "emails", "sms": "text messages", "push": "push notifications"}
TOPIC_NAMES = {
    "acquisition": "Invitations and offers",
    "activation": "Getting-started tips",
    "retention": "News and reminders",
    "recall": "Messages when you have been away",
}
KEPT = "Messages you need about your account, such as receipts, are still sent."

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#222}button{font-size:1rem;padding:.5rem 1.2rem}"
    "fieldset{margin:1rem 0;border:1px solid #ccc}label{display:block;margin:.3rem 0}"
    ".note{color:#555;font-size:.9rem}"
)


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def _what(channel: str, topic: str, every: str = "all") -> str:
    things = CHANNEL_NAMES.get(channel, f"{channel} messages")
    if topic == ALL_TOPICS or topic not in TOPIC_NAMES:
        return f"{every} {things}"
    return f"{things} about “{TOPIC_NAMES[topic].lower()}”"


def invalid_link() -> str:
    return _page(
        "This link is invalid or has expired",
        "<p>Nothing was changed. The link in a more recent message will work.</p>",
    )


def no_profile() -> str:
    return _page(
        "There is nothing to change",
        "<p>This link no longer belongs to anyone who receives our messages.</p>",
    )


def confirm_unsubscribe(channel: str, topic: str, preferences_url: str) -> str:
    what = _what(channel, topic)
    every = CHANNEL_NAMES.get(channel, f"{channel} messages")
    return _page(
        "Unsubscribe",
        f"<p>Stop receiving {escape(what)}?</p>"
        '<form method="post">'
        f'<label><input type="checkbox" name="all" value="1"> All {escape(every)}</label>'
        '<button type="submit">Unsubscribe</button></form>'
        f'<p class="note">{escape(KEPT)} '
        f'<a href="{escape(preferences_url)}">Choose what you receive</a> instead.</p>',
    )


def unsubscribed(result: Unsubscribed, preferences_url: str) -> str:
    return _page(
        "You are unsubscribed",
        f"<p>You will no longer receive {escape(_what(result.channel, result.topic, 'any'))}.</p>"
        f'<p class="note">{escape(KEPT)} '
        f'<a href="{escape(preferences_url)}">Choose what you receive</a>.</p>',
    )


def preferences(state: Preferences, saved: bool) -> str:
    fieldsets = []
    for channel in CHANNELS:
        every = CHANNEL_NAMES[channel]
        boxes = [_checkbox(channel, ALL_TOPICS, f"Any {every} at all", state)]
        boxes += [_checkbox(channel, topic, TOPIC_NAMES[topic], state) for topic in TOPICS]
        fieldsets.append(
            f"<fieldset><legend>{escape(every.capitalize())}</legend>{''.join(boxes)}</fieldset>"
        )
    notice = "<p><strong>Your choices are saved.</strong></p>" if saved else ""
    return _page(
        "What you receive",
        f"{notice}<p>Tick what you would like to receive.</p>"
        '<form method="post"><input type="hidden" name="form" value="preferences">'
        f"{''.join(fieldsets)}"
        '<button type="submit">Save</button></form>'
        f'<p class="note">{escape(KEPT)}</p>',
    )


def _checkbox(channel: str, topic: str, label: str, state: Preferences) -> str:
    checked = " checked" if state[(channel, topic)] else ""
    name = escape(f"{channel}:{topic}")
    return (
        f'<label><input type="checkbox" name="{name}" value="1"{checked}> {escape(label)}</label>'
    )
