"""The follow-up report (``report.html``): placeholder, filled in below."""

from __future__ import annotations


def write_change_report(out, comp) -> None:
    (out / "report.html").write_text("<html><body>follow-up report</body></html>\n")
