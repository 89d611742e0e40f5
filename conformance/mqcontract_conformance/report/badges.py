"""Shields-style SVG badges ("mqcontract | 62/62 passed"), drawn without a web service."""

from __future__ import annotations

from html import escape

from mqcontract_conformance.outcomes import Outcome
from mqcontract_conformance.report.model import ProviderColumn

__all__ = ["badge_for", "render_badge"]

COLORS = {
    "passing": "#4c1",
    "unverified": "#a4a61d",
    "failing": "#e05d44",
    "not-verified": "#e05d44",
    "stale": "#dfb317",
    "missing": "#9f9f9f",
}

# Advance widths of Verdana 11px (the face shields.io measures with), for the characters
# a badge uses; anything else counts as a wide letter.
_WIDTHS = {
    " ": 3.9, "/": 5.0, "-": 4.6, ",": 3.6, ".": 3.6, "(": 5.0, ")": 5.0, ":": 4.5,
    "a": 6.7, "b": 6.8, "c": 5.7, "d": 6.8, "e": 6.6, "f": 3.8, "g": 6.8, "h": 7.0,
    "i": 3.0, "j": 3.8, "k": 6.5, "l": 3.0, "m": 10.7, "n": 7.0, "o": 6.7, "p": 6.8,
    "q": 6.8, "r": 4.7, "s": 5.7, "t": 4.3, "u": 7.0, "v": 6.5, "w": 9.0, "x": 6.5,
    "y": 6.5, "z": 5.8,
}  # fmt: skip


def _text_width(text: str) -> float:
    return sum(_WIDTHS.get(ch, 7.0 if ch.isdigit() else 7.5) for ch in text)


def render_badge(label: str, message: str, color: str) -> str:
    """A flat badge, byte-for-byte stable for the same arguments."""
    left = round(_text_width(label) + 10)
    right = round(_text_width(message) + 10)
    total = left + right
    label_x = left * 5  # text is drawn at scale(.1) for sub-pixel centring, like shields
    message_x = left * 10 + right * 5
    title = escape(f"{label}: {message}")
    label, message = escape(label), escape(message)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{color}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,'
        'sans-serif" text-rendering="geometricPrecision" font-size="110">'
        f'<text x="{label_x}" y="150" fill="#010101" fill-opacity=".3" transform="scale(.1)">'
        f"{label}</text>"
        f'<text x="{label_x}" y="140" transform="scale(.1)">{label}</text>'
        f'<text x="{message_x}" y="150" fill="#010101" fill-opacity=".3" '
        f'transform="scale(.1)">{message}</text>'
        f'<text x="{message_x}" y="140" transform="scale(.1)">{message}</text></g></svg>\n'
    )


def badge_for(provider: ProviderColumn) -> str:
    """The badge of one provider: passed of the rules it ran, coloured by its status.

    Rules that apply but did not run are counted on the badge ("62/62 passed, 6
    unverified"), so a provider whose fault rules never ran cannot look like one whose did.
    """
    if provider.missing:
        return render_badge("mqcontract", "no result", COLORS["missing"])
    if provider.status == "not-verified":
        return render_badge("mqcontract", "not verified", COLORS["not-verified"])
    counts = provider.counts()
    ran = sum(n for outcome, n in counts.items() if outcome.ran)
    message = f"{counts[Outcome.PASSED]}/{ran} passed"
    unverified = provider.unverified_count()
    if unverified:
        message += f", {unverified} unverified"
    if provider.status == "stale":
        message += ", stale"
    return render_badge("mqcontract", message, COLORS[provider.status])
