"""What digest remembers, in SQLite or PostgreSQL (``db``: engine, schema, migrations).

``record`` (the delivery ledger), ``health`` (each feed's state), ``subscribers``,
``lease`` (never two runs at once), ``retention`` (compaction), ``tokens`` (the key
that signs subscribers' links), ``permissions`` (owner-only files) and
``spreadsheet`` (CSV cells that are never formulas).
"""
