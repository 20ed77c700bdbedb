"""CSV cells no spreadsheet runs as a formula (OWASP's "CSV injection").

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a
formula to Excel, LibreOffice and Google Sheets, and names come from the web form: an
export must not hand whoever opens it a ``=HYPERLINK(...)`` a visitor typed. ``escape``
puts a ``'`` in front (the spreadsheets' own "this is text" mark, as OWASP advises) and
``unescape`` takes it off again, so ``subscribers import`` of an export gives back the
same names and addresses. For that round trip to be exact, a cell that starts with
``'`` followed by one of those characters or by another ``'`` is escaped too.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MARK = "'"
_MARKED = (*FORMULA_STARTS, MARK)


def escape(cell: str) -> str:
    """``cell`` as text a spreadsheet shows, never runs."""
    if cell[:1] in FORMULA_STARTS or (cell[:1] == MARK and cell[1:2] in _MARKED):
        return MARK + cell
    return cell


def unescape(cell: str) -> str:
    """The value ``escape`` was given (a cell ``escape`` did not change stays as it is)."""
    if cell[:1] == MARK and cell[1:2] in _MARKED:
        return cell[1:]
    return cell
