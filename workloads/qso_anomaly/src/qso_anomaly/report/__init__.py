"""The HTML run report (matplotlib Agg figures embedded as PNG)."""

from qso_anomaly.report.html import ReportInputs, render_report, write_report

__all__ = ["ReportInputs", "render_report", "write_report"]
