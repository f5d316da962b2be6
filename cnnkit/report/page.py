"""The report's index.html: the spec summary, the test figures, the per-class table and the pictures.

Everything taken from a bundle (names, classes, spec values) is HTML-escaped: a bundle is data, and a
hostile one must not put markup or script into the page.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from ..evaluation import tta_phrase

STYLE = """body{font-family:sans-serif;max-width:1050px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"""


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    def cell(tag: str, i: int, value: Any) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return f"<{tag}{' class=l' if i < left else ''}>{escape(text)}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def render(spec: dict[str, Any], training: dict[str, Any], report: dict[str, Any], pictures: dict[str, str], source: str) -> str:
    """The page as text. ``pictures``: title -> file name (beside index.html)."""
    layers = [[i, layer.get("type", "?"), ", ".join(f"{k}={json.dumps(v)}" for k, v in layer.items() if k != "type")]
              for i, layer in enumerate(spec.get("layers", []))]
    train = spec.get("train", {})
    settings = [[key, json.dumps(value)] for key, value in train.items()]
    settings += [[f"data.{key}", json.dumps(value)] for key, value in spec.get("data", {}).items()]
    classes = [[c["name"], c["precision"], c["recall"], c["f1"], c["support"]] for c in report["classes"]]
    classes += [[f"{key} avg", report[key]["precision"], report[key]["recall"], report[key]["f1"], report[key]["support"]]
                for key in ("macro", "weighted")]
    figures = "\n".join(f"<h2>{escape(title)}</h2>\n<img src=\"{escape(name)}\" alt=\"{escape(title)}\">" for title, name in pictures.items())
    name = escape(str(spec.get("name", "model")))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cnnkit report: {name}</title><style>{STYLE}</style></head>
<body>
<h1>{name}</h1>
<p>From {escape(source)}. Test set: {report['examples']:,} images{escape(tta_phrase(report))}; accuracy <b>{report['accuracy']:.4f}</b>,
macro-F1 <b>{report['macro_f1']:.4f}</b>. Trained for {len(training.get('history', []))} epochs
(seed {escape(str(training.get('seed', train.get('seed'))))}, {escape(str(training.get('train_examples', '?')))} training examples).</p>
<h2>Model</h2>
<p>Input {escape(json.dumps(spec.get('input', {})))}</p>
{_table(['#', 'layer', 'settings'], layers, left=3)}
<h2>Training settings</h2>
{_table(['key', 'value'], settings, left=2)}
<h2>Per class (test set)</h2>
{_table(['class', 'precision', 'recall', 'F1', 'support'], classes)}
{figures}
</body></html>
"""
