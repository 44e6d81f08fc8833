"""Names of the events Lifeline itself puts on a person's timeline: stage changes and
delivery reports. Rules may use them without listing them in events.yaml."""

from __future__ import annotations

STAGE_CHANGED = "lifecycle.stage_changed"

# Delivery reports become events on the person's timeline, named as in Segment's spec where it
# has one ("Email Opened", "Email Marked as Spam", "Unsubscribed"), and alike for SMS and push.
# Rules may use them without listing them in events.yaml; they never count as the person's
# activity (a delivered win-back email does not bring anyone back).
REPORT_EVENTS: dict[tuple[str, str], str] = {
    **{
        (channel, status): f"{prefix} {what}"
        for channel, prefix in (("email", "Email"), ("sms", "SMS"), ("push", "Push"))
        for status, what in (
            ("delivered", "Delivered"),
            ("opened", "Opened"),
            ("clicked", "Link Clicked"),
            ("bounced", "Bounced"),
            ("complained", "Marked as Spam"),
        )
    },
    **{(channel, "unsubscribed"): "Unsubscribed" for channel in ("email", "sms", "push")},
}
REPORT_EVENT_NAMES = frozenset(REPORT_EVENTS.values())

INTERNAL_EVENTS = (STAGE_CHANGED, *sorted(REPORT_EVENT_NAMES))
