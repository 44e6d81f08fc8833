"""What a message's text costs and reads like: SMS segments, and the plain-text part of an
email written only in HTML."""

from __future__ import annotations

import pytest

from service.delivery.service import sms_segments, text_from_html


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),  # GSM-7: 160 characters in one message
        ("a" * 161, 2),  # then 153 per part of a concatenated message
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("Café à Zürich, £5 @ 10:00!" + "x" * 134, 1),  # accented letters of GSM-7 count once
        ("€" * 80, 1),  # extended characters (an escape plus the character) count twice
        ("€" * 81, 2),
        ("a" * 159 + "{", 2),
        ("[]{}|~^\\" + "a" * 144, 1),
        ("[]{}|~^\\" + "a" * 145, 2),
        ("ł" * 70, 1),  # one character outside GSM-7: the whole body is UCS-2, 70 / 67
        ("ł" * 71, 2),
        ("a" * 133 + "ł", 2),
        ("你" * 134, 2),
        ("你" * 135, 3),
        ("😀" * 35, 1),  # outside the BMP: two UCS-2 units each
        ("😀" * 36, 2),
    ],
)
def test_sms_segments(body: str, segments: int) -> None:
    assert sms_segments(body) == segments


def test_text_from_html_keeps_lines_and_link_targets() -> None:
    markup = """
    <html><head><style>p { color: red }</style><script>track("open")</script></head>
    <body>
      <h1>Your cart</h1>
      <p>Fish &amp; chips &lt;b&gt;hot&lt;/b&gt;</p>


      <div>Line one<br>Line two<br/>Line three</div>
      <ul><li>First</li><li>Second</li></ul>
      <p>Finish at <a class="b" href="https://shop.example/c?id=1&amp;x=2">your cart</a>.</p>
    </body></html>
    """
    # Laid out as a browser would: one blank line around headings and paragraphs, none
    # around a <div> or a list (whose items are bulleted); the markup's own line breaks are
    # whitespace.
    assert text_from_html(markup) == (
        "Your cart\n"
        "\n"
        "Fish & chips <b>hot</b>\n"
        "\n"
        "Line one\nLine two\nLine three\n"
        "  * First\n  * Second\n"
        "\n"
        "Finish at your cart (https://shop.example/c?id=1&x=2)."
    )


def test_text_from_html_of_plain_words_is_those_words() -> None:
    assert text_from_html("Hello there") == "Hello there"
    assert text_from_html("") == ""
