"""Write small content packs for tests, one call per pack."""

from __future__ import annotations

from pathlib import Path

import yaml

LAYOUT = """<!DOCTYPE html>
<html><head><title>{{ subject }}</title></head>
<body><div class="preheader" style="display:none">{{ preheader }}</div>
<table class="frame"><tr><td>
<p class="greeting">{{ strings.greeting }} {{ contact.first_name | fallback(strings.friend) }},</p>
{{ slots.hero }}
{% if slots.offer %}<div class="offer-slot">{{ slots.offer }}</div>{% endif %}
<p class="footer"><a href="{{ unsubscribe_url }}">{{ strings.unsubscribe }}</a>
 <a href="https://shop.example.com/about">About us</a></p>
</td></tr></table></body></html>
"""
CSS = "p { margin: 0 0 12px; } .greeting { font-weight: bold; } h2 { color: #b3261e; }"


def block(key: str, locale: str = "en", *, interests=None, slots=("hero",), body=None, **meta) -> dict:
    """One block's front matter and body; unspecified fields get plain defaults."""
    front = {"key": key, "locale": locale, "title": key.replace("-", " ").title()}
    front["interests"] = interests or {"pizza": 1.0}
    front["slots"] = list(slots)
    front.update(meta)
    html = body or f'<h2>{key} ({locale})</h2>\n<p><a href="https://shop.example.com/{key}">Read</a></p>\n'
    return {"front": front, "html": html}


def write_pack(root: Path, blocks: list[dict], *, layout: str = LAYOUT, slots=("hero", "offer"), **manifest) -> Path:
    """A pack directory under ``root`` holding the layout and ``blocks``; returns its path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "layouts").mkdir(exist_ok=True)
    (root / "layouts" / "mail.html").write_text(layout, encoding="utf-8")
    (root / "style.css").write_text(CSS, encoding="utf-8")
    data = {
        "key": "test-pack",
        "name": "Test pack",
        "default_locale": "en",
        "layouts": [{"key": "mail", "html": "layouts/mail.html", "css": ["style.css"], "slots": list(slots)}],
        "strings": {
            "en": {"greeting": "Hi", "friend": "friend", "unsubscribe": "Unsubscribe"},
            "es": {"greeting": "Hola", "friend": "amigo"},
        },
    }
    data.update(manifest)
    (root / "pack.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    folder = root / "blocks"
    folder.mkdir(exist_ok=True)
    for existing in folder.rglob("*.html"):
        existing.unlink()
    for spec in blocks:
        front = yaml.safe_dump(spec["front"], allow_unicode=True, sort_keys=False)
        path = folder / spec["front"]["locale"] / f"{spec['front']['key']}.html"
        path.parent.mkdir(exist_ok=True)
        path.write_text(f"---\n{front}---\n{spec['html']}", encoding="utf-8")
    return root
