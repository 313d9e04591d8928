"""Report: the run as one self-contained HTML page (:func:`write_report`), embedding the figures that
the select and explain stages drew."""

from .html import write_report

__all__ = ["write_report"]
